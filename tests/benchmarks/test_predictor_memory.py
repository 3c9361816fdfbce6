"""benchmarks/predictor_memory.py: one case measured in this process (the command runs each case
in a child process the same way): the outputs' size under max_size, the estimate, the memory."""

from pathlib import Path

from benchmarks import predictor_memory

DEMO = str(Path(__file__).resolve().parents[2] / "configs/demo/panoptic.yaml")


def test_one_case_with_max_size():
    r = predictor_memory._child(DEMO, 160, 64)
    assert r["output"] == "64x64"  # max_size bounds the outputs' size
    assert r["estimate"] > 0 and r["peak"] >= r["base"] > 0 and r["seconds"] > 0
