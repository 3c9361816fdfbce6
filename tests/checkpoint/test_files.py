"""Reading checkpoint files safely: weights-only .pth, .pkl only when allowed, safetensors pairs,
truncated files (mask2former/checkpoint/files.py)."""

import os
import pickle

import pytest
import torch
from torch import nn

from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.checkpoint.files import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_file,
)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_non_atomic_baseline_can_truncate(tmp_path):
    """What the atomic writer protects against: a plain write killed midway leaves a bad file."""
    p = tmp_path / "model_final.pth"
    with open(p, "wb") as f:  # what torch.save leaves when killed after 1 kB
        import io

        b = io.BytesIO()
        torch.save({"model": {"w": torch.zeros(1000)}}, b)
        f.write(b.getvalue()[:1024])
    with pytest.raises(
        CorruptCheckpointError,
        match=r"model_final\.pth \(1024 bytes\) is truncated or corrupted.*Fix",
    ):
        load_checkpoint_file(p)


# ---- safe loading ------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pth_is_loaded_weights_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "x": _Evil()}, p)
    with pytest.raises(
        UnsafeCheckpointError, match=r"evil\.pth with torch.load\(weights_only=True\)"
    ):
        load_checkpoint_file(p)
    assert not (tmp_path / "PWNED").exists()
    # plain tensors / containers / numbers are fine
    torch.save(
        {"model": {"w": torch.ones(1)}, "iteration": 5, "opt": {"lr": [0.1]}}, tmp_path / "ok.pth"
    )
    assert load_checkpoint_file(tmp_path / "ok.pth")["iteration"] == 5


def test_pkl_only_when_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "zoo.pkl"
    with open(p, "wb") as f:
        pickle.dump({"model": {"0.weight": torch.ones(8, 4).numpy()}, "__author__": "zoo"}, f)
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"zoo\.pkl: a \.pkl file is a Python pickle.*can run arbitrary code",
    ):
        load_checkpoint_file(p)
    assert load_checkpoint_file(p, allow_pickle=True)["__author__"] == "zoo"


def test_safetensors_pair_from_two_saves_is_detected(tmp_path):
    model = _model()
    ck = MaskFormerCheckpointer(model, save_dir=str(tmp_path))
    ck.save_format = "safetensors"
    ck.save("model_final", iteration=3)
    old_state = (tmp_path / "model_final.state.pth").read_bytes()
    ck.save("model_final", iteration=4)
    (tmp_path / "model_final.state.pth").write_bytes(old_state)  # as if killed between the writes
    with pytest.raises(CorruptCheckpointError, match="come from two different saves"):
        load_checkpoint_file(tmp_path / "model_final.safetensors")


def test_corrupt_safetensors(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(
        CorruptCheckpointError, match=r"w\.safetensors .* is truncated or corrupted"
    ):
        load_checkpoint_file(p)


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"nope\.pth does not exist\. Fix: check MODEL.WEIGHTS"
    ):
        load_checkpoint_file(tmp_path / "nope.pth")
