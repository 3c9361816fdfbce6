"""mask2former/deploy/verify.py: agreement of an exported network with the eager one, on runners
whose differences are known."""

import torch

from mask2former.deploy.export import ExportableMaskFormer
from mask2former.deploy.runtime import ExportedModel
from mask2former.deploy.verify import Agreement, compare

from .conftest import build, image


def _batches():
    return [
        [{"image": image(45, 70, seed=3), "height": 30, "width": 50}],
        [{"image": image(64, 64)}],
    ]


def test_same_network_agrees_everywhere():
    cfg, model = build("demo")
    net = ExportableMaskFormer(model)
    out = compare(
        ExportedModel(cfg, None, runner=net), ExportedModel(cfg, None, runner=net), _batches()
    )
    assert out.images == 2 and out.logits_diff == [0.0, 0.0] and out.masks_diff == [0.0, 0.0]
    assert out.panoptic == [1.0, 1.0] and out.semantic == [1.0, 1.0]
    assert out.instance_classes_equal == [True, True]


def test_a_changed_network_is_measured():
    """Masks shifted by 0.25 and the class scores rolled by one: the differences are exactly those,
    and every prediction changes class."""
    cfg, model = build("demo")
    net = ExportableMaskFormer(model)

    def changed(x):
        logits, masks = net(x)
        rolled = torch.cat([logits[..., :-1].roll(1, -1), logits[..., -1:]], -1)
        return rolled, masks + 0.25

    with torch.no_grad():
        logits, _ = net(ExportedModel(cfg, None, runner=net).pad(_batches()[1][0]["image"])[0])
    expected = float(
        (torch.cat([logits[..., :-1].roll(1, -1), logits[..., -1:]], -1) - logits).abs().max()
    )
    out = compare(
        ExportedModel(cfg, None, runner=net), ExportedModel(cfg, None, runner=changed), _batches()
    )
    assert abs(out.masks_diff[1] - 0.25) < 1e-6 and out.logits_diff[1] == expected > 0
    assert max(out.panoptic) < 0.999 and max(out.semantic) < 0.999
    assert out.instance_classes_equal == [False, False]


def test_rows_summarise_worst_and_mean():
    a = Agreement([1e-5, 2e-5], [3e-5, 0.5], [1.0, 0.9], [], [True, False])
    rows = dict(a.rows())
    assert rows["images"] == "2" and rows["max |diff| pred_masks"] == "0.5"
    assert rows["panoptic category agreement"] == "min 0.90000, mean 0.95000"
    assert rows["semantic argmax agreement"] == "- (output off)"
    assert rows["instance classes equal"] == "1 of 2 images"
