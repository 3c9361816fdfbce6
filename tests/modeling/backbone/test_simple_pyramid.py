"""ViTDet simple feature pyramid: strides, shapes and each level's operations by hand."""

import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling.backbone.simple_pyramid import SimpleFeaturePyramid


def test_shapes_and_strides():
    p = SimpleFeaturePyramid(in_channels=16, out_channels=8)
    assert p.strides(16) == [4, 8, 16, 32] and p.strides(8) == [2, 4, 8, 16]
    outs = p(torch.randn(2, 16, 4, 6))
    assert [tuple(o.shape) for o in outs] == [
        (2, 8, 16, 24),
        (2, 8, 8, 12),
        (2, 8, 4, 6),
        (2, 8, 2, 3),
    ]
    with pytest.raises(ValueError, match="whole numbers"):
        p.strides(14)
    with pytest.raises(ValueError, match="scales"):
        SimpleFeaturePyramid(16, 8, scales=(3.0,))


def projection(level, y):
    """The 1x1 conv + LN + 3x3 conv + LN every level ends with, written out."""
    conv1, ln1, conv3, ln3 = level[1], level[2], level[3], level[4]
    y = F.conv2d(y, conv1.weight)
    y = F.layer_norm(y.permute(0, 2, 3, 1), (y.shape[1],), ln1.weight, ln1.bias, ln1.eps)
    y = F.conv2d(y.permute(0, 3, 1, 2), conv3.weight, padding=1)
    y = F.layer_norm(y.permute(0, 2, 3, 1), (y.shape[1],), ln3.weight, ln3.bias, ln3.eps)
    return y.permute(0, 3, 1, 2)


def test_levels_match_hand_written_operations_float64():
    torch.manual_seed(0)
    p = SimpleFeaturePyramid(in_channels=8, out_channels=4).double()
    for prm in p.parameters():  # non-trivial norms too
        torch.nn.init.normal_(prm)
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    outs = p(x)
    # stride 2p: 2x2 max pooling; stride p: identity
    torch.testing.assert_close(outs[3], projection(p.levels[3], F.max_pool2d(x, 2)))
    torch.testing.assert_close(outs[2], projection(p.levels[2], x))
    # stride p/2: a 2x2 stride-2 deconvolution puts weight[c_in, c_out] * x[c_in] in each 2x2 cell
    d = p.levels[1][0]
    up = torch.einsum("bihw,iokl->bohkwl", x, d.weight).reshape(1, 4, 6, 8) + d.bias.view(
        1, -1, 1, 1
    )
    torch.testing.assert_close(outs[1], projection(p.levels[1], up))
    # stride p/4: deconv -> LayerNorm over channels -> GELU -> deconv
    d1, ln, d2 = p.levels[0][0][0], p.levels[0][0][1], p.levels[0][0][3]
    y = F.conv_transpose2d(x, d1.weight, d1.bias, stride=2)
    y = F.layer_norm(y.permute(0, 2, 3, 1), (4,), ln.weight, ln.bias, ln.eps).permute(0, 3, 1, 2)
    y = F.conv_transpose2d(F.gelu(y), d2.weight, d2.bias, stride=2)
    torch.testing.assert_close(outs[0], projection(p.levels[0], y))
