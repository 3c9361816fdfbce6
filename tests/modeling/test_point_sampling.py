"""Point sampling (mask2former/modeling/point_sampling.py)."""

import pytest
import torch

from mask2former.modeling.point_sampling import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)


def test_point_sample_reads_pixel_centres():
    masks = torch.arange(6.0).reshape(1, 2, 3)
    coords = torch.tensor([[[0.5 / 3, 0.25], [2.5 / 3, 0.75]]])  # (x, y)
    assert point_sample(masks, coords)[0].tolist() == pytest.approx([0.0, 5.0], abs=1e-6)


def test_importance_sampling_picks_the_most_uncertain_points():
    # Logit map with a band of uncertainty (logit ~0) in the middle and confident elsewhere.
    logits = torch.full((1, 1, 32, 32), 8.0)
    logits[..., 12:20] = torch.linspace(-0.5, 0.5, 8)
    p, k = 50, 3.0
    g = torch.Generator().manual_seed(3)
    coords = get_uncertain_point_coords_with_randomness(logits, p, k, 1.0, generator=g)
    assert coords.shape == (1, p, 2)

    g.manual_seed(3)
    candidates = torch.rand(1, int(p * k), 2, generator=g)
    uncertainty = -point_sample(logits, candidates).abs()[0, 0]
    best = candidates[0, torch.topk(uncertainty, p).indices]
    assert {tuple(c) for c in coords[0].tolist()} == {tuple(c) for c in best.tolist()}
    # and they lie in (or next to) the uncertain band, while uniform points mostly do not.
    assert (point_sample(logits, coords).abs() < 8).all()


def test_importance_ratio_mixes_uniform_points():
    logits = torch.randn(4, 1, 8, 8)
    coords = get_uncertain_point_coords_with_randomness(logits, 40, 3.0, 0.75)
    assert coords.shape == (4, 40, 2)
    assert coords.min() >= 0 and coords.max() <= 1
