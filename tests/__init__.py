"""Tests mirror the package: tests for mask2former/a/b.py live in tests/a/test_b.py; tools/,
datasets/, demo/, configs/ and benchmarks/ outside the package get tests/tools/, tests/datasets/, ...

Every folder here is a package (an empty `__init__.py` each), so files with the same name in
different folders are different modules (`tests.modeling.test_build`, `tests.solver.test_build`)
under pytest's default import mode, and shared helpers import as `tests.<folder>.<module>` or
relatively (`from .records import ...`).
"""
