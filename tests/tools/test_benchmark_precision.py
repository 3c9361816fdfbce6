"""tools/benchmark_inference.py and tools/benchmark_training.py: fp32 and bf16 side by side in one
run; on a CPU without native bf16 the bf16 column/rows say "skipped" instead of running an
emulated path. Tiny sizes; numbers are not checked (they belong to the printed tables)."""

import importlib.util
import json
from pathlib import Path

import pytest

from mask2former.utils import precision

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/panoptic.yaml")


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ARGS = ["--config-file", DEMO, "--size", "64", "64", "--runs", "1", "--warmup", "0", "--no-flops"]


@pytest.mark.parametrize("native", [False, True])
def test_inference_benchmark_columns(monkeypatch, tmp_path, capsys, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    out = tmp_path / "r.json"
    assert load("benchmark_inference").main(ARGS + ["--json", str(out)]) == 0
    cols = json.loads(out.read_text())[0]["precisions"]
    assert list(cols) == ["fp32", "bf16"]
    assert set(cols["fp32"]["stages_s"]) >= {"backbone", "post-processing"}
    printed = capsys.readouterr().out
    assert "| stage | fp32 s (share) | bf16 s (share) |" in printed
    if native:  # forced here: emulated bf16 is slow on such a CPU, but correct
        assert cols["bf16"]["stages_s"]["backbone"] > 0 and "skipped" not in printed
    else:
        assert cols["bf16"] == {"skipped": cols["bf16"]["skipped"]}
        assert "skipped: no native bf16 on this CPU" in printed


def test_training_benchmark_skips_bf16_without_native_support(monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    summary = load("benchmark_training").main(
        ["--config-file", DEMO, "--size", "64", "--batch", "1", "--masks-per-image", "2",
         "--iters", "1", "--warmup", "0", "--modes", "point", "--device", "cpu",
         "--precision", "fp32", "bfloat16"]
    )  # fmt: skip
    assert [(r["mode"], r["precision"]) for r in summary["results"]] == [("point", "fp32")]
    assert "point bfloat16: skipped: no native bf16 on this CPU" in capsys.readouterr().out
