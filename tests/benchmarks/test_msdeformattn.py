"""`python -m benchmarks.msdeformattn` runs and prints one row per available backend."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_tool_tiny_shape():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.msdeformattn",
            "--levels",
            "4",
            "2",
            "--batch",
            "1",
            "--heads",
            "2",
            "--channels",
            "4",
            "--points",
            "2",
            "--repeat",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        line for line in proc.stdout.splitlines() if line.startswith("| ") and "backend" not in line
    ]
    assert [r.split("|")[1].strip() for r in rows][0] == "pytorch"
    for row in rows:
        assert float(row.split("|")[-2]) < 1e-5, row  # max abs diff vs pytorch
