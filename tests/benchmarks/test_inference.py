"""`python -m benchmarks.inference`: fp32 and bf16 side by side in one run; on a CPU without
native bf16 the bf16 column says "skipped" instead of running an emulated path. Tiny sizes;
numbers are not checked (they belong to the printed tables)."""

import json
from pathlib import Path

import pytest

from benchmarks import inference
from mask2former.utils import precision

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/panoptic.yaml")


ARGS = ["--config-file", DEMO, "--size", "64", "64", "--runs", "1", "--warmup", "0", "--no-flops"]


@pytest.mark.parametrize("native", [False, True])
def test_inference_benchmark_columns(monkeypatch, tmp_path, capsys, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    out = tmp_path / "r.json"
    assert inference.main(ARGS + ["--json", str(out)]) == 0
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
