"""Atomic checkpoint writes and safe loading (mask2former/utils/atomic_io.py)."""

import os
import pickle
import random
import signal
import time

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from mask2former.utils.atomic_io import (
    AtomicCheckpointerMixin,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint_file,
    remove_stale_temp_files,
)


class Ckpt(AtomicCheckpointerMixin, DetectionCheckpointer):
    pass


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_atomic_save_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model_final.pth"
    atomic_torch_save({"v": torch.ones(3)}, path)
    real_save = torch.save

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"v": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(load_checkpoint_file(path)["model"]["v"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model_final.pth"]  # no temp file left behind


def test_atomic_write_text_and_permissions(tmp_path):
    p = tmp_path / "last_checkpoint"
    atomic_write_text(p, "model_0000009.pth")
    assert p.read_text() == "model_0000009.pth"
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def _save_forever(save_dir, atomic, model):
    """Child process: save a 4 MB checkpoint over and over (model_final + a numbered one)."""
    torch.set_num_threads(1)  # no OpenMP region in a forked child
    ck = (Ckpt if atomic else DetectionCheckpointer)(model, save_dir=save_dir)
    i = 0
    while True:
        with torch.no_grad():
            model.bias.fill_(i)
        ck.save("model_final")
        ck.save(f"model_{i:07d}")
        i += 1


def _kill_while_saving(out, atomic, delay):
    """Fork (no re-import: fast), let the child save for `delay` s, then SIGKILL it."""
    out.mkdir(parents=True)
    model = nn.Linear(1024, 1024)  # built before the fork
    pid = os.fork()
    if pid == 0:  # child
        try:
            _save_forever(str(out), atomic, model)
        finally:
            os._exit(1)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _loadable(path):
    try:
        load_checkpoint_file(path)
        return True
    except (CorruptCheckpointError, FileNotFoundError):
        return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_while_saving_never_leaves_a_truncated_checkpoint(tmp_path):
    rng = random.Random(1234)
    for k in range(6):
        out = tmp_path / f"run{k}"
        _kill_while_saving(out, atomic=True, delay=rng.uniform(0.3, 1.0))
        last = (out / "last_checkpoint").read_text().strip()
        assert _loadable(out / last), f"last_checkpoint names a broken file {last}"
        assert _loadable(out / "model_final.pth")
        for name in os.listdir(out):
            if name.endswith(".pth"):
                assert _loadable(out / name), name
        stale = sorted(n for n in os.listdir(out) if n.endswith(".tmp"))
        assert remove_stale_temp_files(out) == stale  # a kill mid-save may leave a temp file ...
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # ... cleaned up on resume


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


def test_checkpointer_resume_never_unpickles_but_explicit_pkl_loads(tmp_path):
    model = _model()
    zoo = tmp_path / "zoo.pkl"
    with open(zoo, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in _model(1).state_dict().items()},
                "__author__": "zoo",
            },
            f,
        )
    out = tmp_path / "out"
    out.mkdir()
    (out / "last_checkpoint").write_text("../zoo.pkl")  # something put a pickle in the resume path
    ck = Ckpt(model, save_dir=str(out))
    with pytest.raises(UnsafeCheckpointError, match="never from a file found automatically"):
        ck.resume_or_load(str(zoo), resume=True)
    ck.resume_or_load(str(zoo), resume=False)  # named by the user (MODEL.WEIGHTS): allowed
    assert torch.allclose(model[0].weight, _model(1)[0].weight)


def test_safetensors_save_and_resume(tmp_path):
    from detectron2.solver import build_lr_scheduler  # noqa: F401  (d2 import side effects)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ck = Ckpt(model, save_dir=str(tmp_path), optimizer=opt)
    ck.save_format = "safetensors"
    ck.save("model_0000004", iteration=4)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.safetensors"
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000004.safetensors",
        "model_0000004.state.pth",
    ]
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "model_0000004.safetensors")) == set(model.state_dict())

    model2 = _model(7)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    extra = Ckpt(model2, save_dir=str(tmp_path), optimizer=opt2).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(
        opt2.state_dict()["state"][0]["momentum_buffer"],
        opt.state_dict()["state"][0]["momentum_buffer"],
    )
    # MODEL.WEIGHTS can name a .safetensors file directly
    model3 = _model(9)
    Ckpt(model3).load(str(tmp_path / "model_0000004.safetensors"), checkpointables=[])
    assert torch.equal(model3[2].bias, model[2].bias)


def test_safetensors_pair_from_two_saves_is_detected(tmp_path):
    model = _model()
    ck = Ckpt(model, save_dir=str(tmp_path))
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
