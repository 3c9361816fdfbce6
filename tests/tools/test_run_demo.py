"""tools/run_demo.py and tools/plot_training_curves.py on a small metrics.json."""

import importlib.util
import json
import os

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    # By path: detectron2 installs a top-level `tools` package that would shadow ours.
    spec = importlib.util.spec_from_file_location(
        f"_demo_{name}", os.path.join(REPO, "tools", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDS = [
    {"iteration": 19, "total_loss": 40.0, "loss_ce": 3.0, "loss_mask": 2.0, "loss_dice": 3.5},
    {"iteration": 39, "total_loss": 30.0, "loss_ce": 2.0, "loss_mask": 1.5, "loss_dice": 3.0},
    {"iteration": 39, "panoptic_seg/PQ": 20.0, "segm/AP": 12.0, "sem_seg/mIoU": 50.0},
    {"iteration": 59, "total_loss": 20.0, "loss_ce": 1.0, "loss_mask": 1.0, "loss_dice": 2.0},
    {
        "iteration": 59,
        "panoptic_seg/PQ": 55.0,
        "panoptic_seg/PQ_th": 50.0,
        "segm/AP": 48.0,
        "sem_seg/mIoU": 75.0,
    },
]


def test_metrics_table_and_curves(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + '\n{"iteration": 6')  # cut line
    curves, run_demo = _load("plot_training_curves"), _load("run_demo")
    records = curves.read_metrics(str(path))
    assert len(records) == len(RECORDS)
    metrics = curves.last_metrics(records)
    assert metrics["panoptic_seg/PQ"] == 55.0 and metrics["segm/AP"] == 48.0
    text, md = run_demo.metrics_table(metrics)
    assert "PQ things" in text and "PQ stuff" not in text  # extras only when evaluated
    lines = md.splitlines()
    assert lines[0].startswith("| Task | Metric")
    assert "| Panoptic | PQ | 55.0 | >= 50 | yes |" in lines
    assert "| Instance | mask AP | 48.0 | >= 50 | no |" in lines
    png = curves.plot(str(path), str(tmp_path / "curves.png"))
    assert Image.open(png).size[0] > 500


def test_training_precision_follows_the_cpu(monkeypatch, capsys):
    """bf16 (SOLVER.AMP bfloat16) only where the CPU has it natively, one line saying which."""
    from mask2former.utils import precision

    run_demo = _load("run_demo")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert run_demo.precision_overrides("auto") == [
        "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16",
    ]  # fmt: skip
    assert run_demo.precision_overrides("fp32") == []
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert run_demo.precision_overrides("auto") == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Training precision: bf16 (native on this CPU")
    assert lines[1] == "Training precision: as the config says (--precision fp32)."
    assert (
        lines[2].startswith("Training precision: fp32 (this CPU (") and "no native bf16" in lines[2]
    )
