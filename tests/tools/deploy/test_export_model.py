"""tools/deploy/export_model.py: the command line."""

import importlib.util
from pathlib import Path

import pytest
import torch

from mask2former.deploy.runtime import load_runner

TOOL = Path(__file__).resolve().parents[3] / "tools" / "deploy" / "export_model.py"
DEMO = str(Path(__file__).resolve().parents[3] / "configs" / "demo" / "panoptic.yaml")


def load_tool():
    spec = importlib.util.spec_from_file_location("export_model", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_size_not_a_multiple_is_a_clear_error(tmp_path):
    tool = load_tool()
    with pytest.raises(ValueError, match="size divisibility 32"):
        tool.main(["--config-file", DEMO, "--format", "onnx", "--output", str(tmp_path),
                   "--height", "70", "--width", "64"])  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_unknown_format_exits(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool().main(["--config-file", DEMO, "--format", "tflite", "--output", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow  # one torch.export trace of the demo model: 30-70 s on a 2-core CPU
def test_exports_a_loadable_program(tmp_path):
    path = load_tool().main(
        ["--config-file", DEMO, "--format", "torch_export", "--output", str(tmp_path),
         "--height", "64", "--width", "64", "--opts", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "5"]
    )  # fmt: skip
    assert path == str(tmp_path / "model.pt2")
    logits, masks = torch.export.load(path).module()(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 5, 8) and masks.shape == (1, 5, 16, 16)
    assert load_runner(path).fixed_size == (64, 64)  # a static export pads images to its size


def test_weights_go_through_the_shared_loader(tmp_path):
    """A missing file and a checkpoint of another model are clear errors (predictor.load_weights),
    not an assertion or a silently random export."""
    from mask2former.predictor import WeightsMismatchError

    tool = load_tool()
    args = ["--config-file", DEMO, "--format", "onnx", "--output", str(tmp_path / "out")]
    with pytest.raises(FileNotFoundError, match="weights file .*nope.pth does not exist"):
        tool.main([*args, "--opts", "MODEL.WEIGHTS", str(tmp_path / "nope.pth")])
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsMismatchError):
        tool.main([*args, "--opts", "MODEL.WEIGHTS", str(tmp_path / "other.pth")])
    assert not (tmp_path / "out").exists()
