"""`python -m benchmarks.training`: fp32 and bf16 side by side in one run; on a CPU without native
bf16 the bf16 rows say "skipped" instead of running an emulated path. Tiny sizes; numbers are not
checked (they belong to the printed lines)."""

from pathlib import Path

from benchmarks import training
from mask2former.utils import precision

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/panoptic.yaml")


def test_training_benchmark_skips_bf16_without_native_support(monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    summary = training.main(
        ["--config-file", DEMO, "--size", "64", "--batch", "1", "--masks-per-image", "2",
         "--iters", "1", "--warmup", "0", "--modes", "point", "--device", "cpu",
         "--precision", "fp32", "bfloat16"]
    )  # fmt: skip
    assert [(r["mode"], r["precision"]) for r in summary["results"]] == [("point", "fp32")]
    assert "point bfloat16: skipped: no native bf16 on this CPU" in capsys.readouterr().out
