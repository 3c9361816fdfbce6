"""`.pkl` weights are unpickled with NumPy arrays and plain containers only."""

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.checkpoint.files import load_checkpoint_file
from mask2former.checkpoint.safe_pickle import UnsafeCheckpointError, load_pickle_weights


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class _Evil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def _zoo(path, protocol=pickle.DEFAULT_PROTOCOL, **extra):
    model = OrderedDict(
        w=np.arange(6, dtype=np.float32).reshape(2, 3),
        b=np.zeros(2, dtype=np.float64),
        n=np.int64(5),  # a NumPy scalar
        h=np.ones(3, dtype=np.float16),
    )
    data = {"model": model, "__author__": "zoo", "matching_heuristics": True, "k": (1, [2.5, "x"])}
    data.update(extra)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_zoo_style_pickles_load_exactly(tmp_path, protocol):
    data = _zoo(tmp_path / "z.pkl", protocol)
    got = load_pickle_weights(tmp_path / "z.pkl")
    assert got.keys() == data.keys() and got["k"] == (1, [2.5, "x"])
    for k, v in data["model"].items():
        assert np.asarray(got["model"][k]).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(got["model"][k], v)


@pytest.mark.parametrize(
    "payload, glob", [(_RunsCode(), "posix.system"), (_Evil(), "builtins.eval")]
)
def test_code_running_pickles_are_refused_naming_the_global(tmp_path, payload, glob):
    p = tmp_path / "evil.pkl"
    _zoo(p, evil=payload)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_pickle_weights(p)
    assert f"refusing to load {p}: it asks to unpickle the global '{glob}'" in str(e.value)
    # the same through every road a .pkl takes
    with pytest.raises(UnsafeCheckpointError, match=glob):
        load_checkpoint_file(p, allow_pickle=True)
    with pytest.raises(UnsafeCheckpointError, match=glob):
        MaskFormerCheckpointer(nn.Linear(3, 2)).load(str(p))


def test_torch_tensors_in_a_pkl_are_refused(tmp_path):
    p = tmp_path / "t.pkl"
    with open(p, "wb") as f:
        pickle.dump({"model": {"w": torch.ones(2)}}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"the global 'torch\._utils\._rebuild_tensor"):
        load_pickle_weights(p)


def test_caffe2_blobs_still_load_through_the_checkpointer(tmp_path):
    p = tmp_path / "c2.pkl"
    with open(p, "wb") as f:
        pickle.dump({"blobs": {"weight": np.ones((2, 3), np.float32), "w_momentum": 0}}, f)
    data = MaskFormerCheckpointer(nn.Linear(3, 2))._load_file(str(p))
    assert data["matching_heuristics"] and list(data["model"]) == ["weight"]


def test_the_predictor_and_the_trainer_checkpointer_unpickle_restricted(tmp_path):
    """Every entry point reads a .pkl through the one checkpointer (before: also a detectron2
    checkpointer with the atomic mixin)."""
    from mask2former.predictor import load_weights

    p = tmp_path / "evil.pkl"
    _zoo(p, evil=_RunsCode())
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_weights(nn.Linear(3, 2), str(p))
    ckpt = MaskFormerCheckpointer(nn.Linear(3, 2), str(tmp_path))
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        ckpt.resume_or_load(str(p), resume=True)  # no last_checkpoint: MODEL.WEIGHTS
