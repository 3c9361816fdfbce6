"""Atomic file writes (mask2former/utils/atomic_file.py)."""

import os

import pytest
import torch

from mask2former.checkpoint.files import load_checkpoint_file
from mask2former.utils.atomic_file import (
    atomic_torch_save,
    atomic_write_text,
    remove_stale_temp_files,
)


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


def test_remove_stale_temp_files_only_removes_our_temp_names(tmp_path):
    for name in (".model_final.pth.k2j_x9.tmp", ".last_checkpoint.ab12cd.tmp", "x.tmp", ".hidden"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(remove_stale_temp_files(tmp_path)) == [
        ".last_checkpoint.ab12cd.tmp",
        ".model_final.pth.k2j_x9.tmp",
    ]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "x.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []
