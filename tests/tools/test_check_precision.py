"""tools/check_precision.py: refusals, the pass/fail rules, and the command on a generated split."""

import importlib.util
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from mask2former.config import load_config
from mask2former.evaluation.agreement import InstanceAgreement
from mask2former.utils import precision

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo" / "panoptic.yaml")
SMALL = ["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "5"]


def load_tool():
    spec = importlib.util.spec_from_file_location("check_precision", REPO / "tools" / "check_precision.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def weights(tmp_path) -> str:
    torch.manual_seed(0)
    model = build_model(load_config(DEMO, ["MODEL.DEVICE", "cpu", *SMALL]))
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    return str(tmp_path / "w.pth")


def test_weights_are_required():
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty.*--opts MODEL.WEIGHTS FILE"):
        load_tool().main(["--config-file", DEMO])


def test_weights_go_through_the_shared_loader(tmp_path):
    """A missing file and a checkpoint of another model are clear errors (predictor.load_weights),
    not an assertion or a comparison of random weights."""
    from mask2former.predictor import WeightsMismatchError

    with pytest.raises(FileNotFoundError, match="weights file .*nope.pth does not exist"):
        load_tool().main(["--config-file", DEMO, "--opts", "MODEL.WEIGHTS", str(tmp_path / "nope.pth")])  # fmt: skip
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsMismatchError):
        load_tool().main(["--config-file", DEMO, "--opts", "MODEL.WEIGHTS", str(tmp_path / "other.pth")])  # fmt: skip


def test_evaluate_needs_the_whole_split():
    with pytest.raises(SystemExit, match="--evaluate scores the whole split.*drop --max-images"):
        load_tool().main(["--config-file", DEMO, "--evaluate", "--max-images", "3"])


def test_no_native_bf16_is_refused_without_allow_emulated(weights, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(SystemExit, match="falls back to fp32 on this cpu.*--allow-emulated"):
        load_tool().main(["--config-file", DEMO, "--opts", *SMALL, "MODEL.WEIGHTS", weights])


def test_each_missed_goal_is_named():
    tool = load_tool()
    good = tool.Summary()
    good.semantic, good.panoptic = [0.995, 1.0], [0.999, 0.99]
    good.instances = [InstanceAgreement(True, [(97, 100), (7, 9)], 0, False)] * 2
    assert good.failures(0.99, 0.95) == []  # pooled: 208 / 218; a 9-pixel mask alone: 0.78
    bad = tool.Summary()
    bad.semantic, bad.panoptic = [1.0, 0.98], [1.0, 1.0]
    bad.instances = [
        InstanceAgreement(True, [(100, 100), (90, 100)], 0, True),
        InstanceAgreement(False, [(0, 50)], 2, False),
        InstanceAgreement(True, [], 0, True),  # nothing confident: no IoU
    ]
    assert bad.failures(0.99, 0.95) == [
        "semantic agreement 0.98000 < --min-agreement 0.99 (image 1)",
        "instance classes differ on 1 image(s), first: image 1",
        "pooled matched mask IoU 0.7600 < --min-iou 0.95",
    ]
    assert tool.Summary().failures(0.99, 0.95) == []  # outputs off: nothing to fail
    fp32 = {"panoptic_seg PQ": 50.0, "segm AP": 30.0, "sem_seg mIoU": 40.0}
    low = {"panoptic_seg PQ": 50.5, "segm AP": 29.4, "sem_seg mIoU": float("nan")}
    assert tool.metric_failures(fp32, low, 0.5) == [
        "segm AP 29.40 vs fp32 30.00: more than --max-metric-diff 0.5 apart",
        "sem_seg mIoU nan vs fp32 40.00: more than --max-metric-diff 0.5 apart",
    ]


def test_the_command_on_a_generated_split(tmp_path, demo_shapes, weights, monkeypatch, capsys):
    """bf16 emulated on any CPU, one generated val image, with the metrics."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    from mask2former.data.datasets.register_demo_shapes import register_demo_shapes

    splits = {"val": (1, 1000)}
    demo_shapes.prepare_demo_shapes(str(tmp_path / "data"), splits=splits, workers=1)
    names = register_demo_shapes(str(tmp_path / "data"), prefix="_test_precision", splits=splits)
    try:
        rc = load_tool().main(
            [
                "--config-file",
                DEMO,
                "--evaluate",
                "--allow-emulated",
                "--opts",
                *SMALL,
                "MODEL.WEIGHTS",
                weights,
                "DATASETS.TEST",
                "('_test_precision_panoptic_val',)",
                "OUTPUT_DIR",
                str(tmp_path / "out"),
            ]  # fmt: skip
        )
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    out = capsys.readouterr().out
    assert "bf16 vs fp32 on _test_precision_panoptic_val:" in out
    assert "images                         1" in out
    for row in ("semantic argmax agreement      min", "panoptic category agreement    min",
                "instances, score >= 0.1", "matched mask IoU, pooled", "exact top-20 class order"):  # fmt: skip
        assert row in out, out
    metrics = [line.split() for line in out.splitlines() if line.startswith("  panoptic_seg PQ")]
    assert len(metrics) == 1 and len(metrics[0]) == 4  # name, PQ, fp32, bf16
    assert ("FAILED:" in out) == (rc == 1) and ("OK: every check passed" in out) == (rc == 0)
    for run in ("fp32", "bf16"):  # each evaluator's files in its own folder
        folder = tmp_path / "out" / "check_precision" / run / "_test_precision_panoptic_val"
        assert (folder / "results.json").is_file(), sorted(tmp_path.rglob("results.json"))
