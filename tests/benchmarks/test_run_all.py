"""Smoke tests of `python -m benchmarks.run_all`: it runs on the CPU at tiny sizes and prints every
table with its columns."""

import os
import time

import pytest

from benchmarks import run_all
from benchmarks.models import MODELS, REPO

TINY = [
    "--device",
    "cpu",
    "--small",
    "--warmup",
    "0",
    "--iters",
    "1",
    "--train-batches",
    "2",
    "--train-amp",
    "bf16",
    "--infer-dtypes",
    "fp32,bf16",
]

HEADERS = {
    "Device": ["matmul TFLOP/s"],
    "MSDeformAttn forward / forward+backward": [
        "backend",
        "fwd ms",
        "fwd+bwd ms",
        "rel err vs fp32 pytorch",
    ],
    "Inference throughput": [
        "img/s",
        "ms/img",
        "backbone",
        "pixel dec",
        "tr. decoder",
        "pre+post",
        "peak GiB",
    ],
    "Masked attention's share": ["masked cross-attn", "share %"],
    "Outputs unchanged": ["variant", "logits rel", "panoptic px agree %", "verdict"],
    "FLOPs (fvcore": ["GFLOPs", "achieved TFLOP/s", "MFU %"],
    "Training iteration": ["AMP", "batch", "loss", "ms/iter", "peak GiB", "GiB/img", "MFU %"],
}


def _check_printed(out: str, tables) -> None:
    for title, cols in HEADERS.items():
        assert f"### {title}" in out, title
        for c in ["device", "dtype" if title != "Training iteration" else "AMP", "shape"] + cols:
            assert f" {c} " in out, (title, c)
    for t in tables:
        for r in t.rows:
            assert r.get("device") and r.get("shape") and r.get("dtype"), r
            assert r["status"].startswith("ok") or r["status"].startswith("n/a"), (t.title, r)


def test_run_all_standin_cpu_small(capsys):
    t0 = time.process_time()  # CPU time: the wall clock depends on what else the machine runs
    tables = run_all.main(TINY + ["--standin", "--models", "R50", "--losses", "point,full"])
    out = capsys.readouterr().out
    _check_printed(out, tables)
    train = [r for t in tables if t.title.startswith("Training") for r in t.rows]
    assert {r["loss"] for r in train} == {"point", "full"}
    verdicts = [r.get("verdict") for t in tables if t.title.startswith("Outputs") for r in t.rows]
    assert verdicts and all(v == "pass" for v in verdicts)
    assert time.process_time() - t0 < 60


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(os.path.join(REPO, MODELS["R50"])), reason="R50 config not present"
)
def test_run_all_real_r50_cpu_small(capsys, tmp_path):
    """The real R50 COCO panoptic model through every model section, at 64-96 px, one iteration."""
    argv = [
        "--device",
        "cpu",
        "--small",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--models",
        "R50",
        "--infer-dtypes",
        "fp32",
        "--train-batches",
        "1",
        "--train-amp",
        "bf16",
        "--losses",
        "point",
        "--crop",
        "64",
        "--sections",
        "inference,check,flops,training",
        "--json",
        str(tmp_path / "b.json"),
    ]
    tables = run_all.main(argv)
    out = capsys.readouterr().out
    for title in (
        "Inference throughput",
        "Masked attention",
        "Outputs unchanged",
        "FLOPs",
        "Training iteration",
    ):
        assert f"### {title}" in out, title
    for t in tables:
        for r in t.rows:
            assert "error" not in r["status"] and "OOM" not in r["status"], (t.title, r)
    flops_row = next(r for t in tables if t.title.startswith("FLOPs") for r in t.rows)
    assert 43.9 < flops_row["params_m"] < 44.1 and flops_row["gflops"] > 0
    assert (tmp_path / "b.json").stat().st_size > 0
