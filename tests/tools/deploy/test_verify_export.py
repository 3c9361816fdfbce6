"""tools/deploy/verify_export.py: the pass/fail rules, and the command on a real export."""

import importlib.util
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from mask2former.config import load_config
from mask2former.deploy.verify import Agreement

REPO = Path(__file__).resolve().parents[3]
TOOL = REPO / "tools" / "deploy" / "verify_export.py"
DEMO = str(REPO / "configs" / "demo" / "panoptic.yaml")


def load_tool(name="verify_export", path=TOOL):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_are_required(tmp_path):
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty.*--opts MODEL.WEIGHTS FILE"):
        load_tool().main(["--config-file", DEMO, "--exported", str(tmp_path / "model.onnx")])


def test_weights_go_through_the_shared_loader(tmp_path):
    """A missing weights file is a clear error (predictor.load_weights), not an assertion."""
    with pytest.raises(FileNotFoundError, match="weights file .*nope.pth does not exist"):
        load_tool().main(["--config-file", DEMO, "--exported", str(tmp_path / "m.onnx"),
                          "--opts", "MODEL.WEIGHTS", str(tmp_path / "nope.pth")])  # fmt: skip


def test_each_failed_check_is_named():
    tool = load_tool()
    good = Agreement([1e-6], [5e-5], [1.0], [0.9995], [True])
    assert tool.failures(good, 1e-4, 0.999) == []
    bad = Agreement([2e-4, 0.0], [0.0, 0.0], [1.0, 0.5], [1.0, 1.0], [True, False])
    assert tool.failures(bad, 1e-4, 0.999) == [
        "max |diff| of pred_logits 0.0002 > --atol 0.0001",
        "panoptic agreement 0.50000 < --min-agreement 0.999 (image 1)",
        "instance classes differ on 1 image(s), first: image 1",
    ]
    assert tool.failures(Agreement(), 1e-4, 0.999) == []  # outputs off: nothing to fail


@pytest.mark.slow  # one torch.export trace of the demo model (15-70 s on a 2-core CPU)
def test_an_export_of_the_model_passes(tmp_path, demo_shapes, capsys):
    from mask2former.data.datasets.register_demo_shapes import register_demo_shapes

    splits = {"val": (2, 1000)}
    demo_shapes.prepare_demo_shapes(str(tmp_path / "data"), splits=splits, workers=1)
    names = register_demo_shapes(str(tmp_path / "data"), prefix="_test_verify", splits=splits)
    try:
        opts = ["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "5", "DATASETS.TEST", "('_test_verify_panoptic_val',)"]  # fmt: skip
        torch.manual_seed(0)
        model = build_model(load_config(DEMO, ["MODEL.DEVICE", "cpu", *opts]))
        torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
        opts += ["MODEL.WEIGHTS", str(tmp_path / "w.pth"), "OUTPUT_DIR", str(tmp_path / "o")]
        export = load_tool("export_model", REPO / "tools" / "deploy" / "export_model.py")
        path = export.main(["--config-file", DEMO, "--format", "torch_export", "--output",
                            str(tmp_path / "out"), "--height", "256", "--width", "256", "--opts", *opts])  # fmt: skip
        rc = load_tool().main(
            ["--config-file", DEMO, "--exported", path, "--evaluate", "--opts", *opts]
        )
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    out = capsys.readouterr().out
    assert rc == 0 and "OK: every check passed" in out, out
    assert "images                         2" in out and "min 1.00000" in out
    assert "instance classes equal         2 of 2 images" in out
    pq = [line.split() for line in out.splitlines() if line.strip().startswith("panoptic_seg PQ")]
    assert len(pq) == 1 and pq[0][2] == pq[0][3]  # same PQ from both
    for side in ("pytorch", "exported"):  # each evaluator's files in its own folder
        assert (tmp_path / "o" / "verify_export" / side / "_test_verify_panoptic_val").is_dir()
