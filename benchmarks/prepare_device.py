#!/usr/bin/env python
"""Pack what an offline machine lacks into `.devsite/`, so that the benchmarks run there.

For a GPU machine that has Python 3.12, PyTorch, numpy, scipy, timm and OpenCV but neither
detectron2 nor its small dependencies, and no package index to install them from. Run here (with
the project's .venv set up): it copies the pure-Python packages from the local environment and
downloads a cp312 manylinux wheel for the compiled one (pycocotools) into `.devsite/` (git-ignored
through .git/info/exclude). Copy the repository with `.devsite/` to that machine, then:

    export PYTHONPATH=$PWD/.devsite:$PWD; python3 -m benchmarks.run_all --device cuda

About 25 MB.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(REPO, ".devsite")
# Imported by `import mask2former`, detectron2's model/config code, fvcore's FLOP counter.
PURE = [
    "detectron2",
    "fvcore",
    "iopath",
    "omegaconf",
    "hydra",
    "antlr4",
    "yacs",
    "termcolor",
    "pydot",
    "panopticapi",
    "cityscapesscripts",
]
COMPILED = ["pycocotools"]  # (distribution name == import name here)


def _location(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"{name} is not importable here: run `make setup` first")
    return spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin


def copy_pure(name: str) -> None:
    src = _location(name)
    if os.path.isdir(src):
        compiled = [f for _, _, fs in os.walk(src) for f in fs if f.endswith((".so", ".pyd"))]
        if compiled:
            raise SystemExit(
                f"{name} has compiled files ({compiled[:2]}); list it in COMPILED instead"
            )
        shutil.copytree(src, os.path.join(DEST, name), ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(src, DEST)


def fetch_wheel(name: str) -> None:
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        platforms = []
        for p in (
            "manylinux_2_28_x86_64",
            "manylinux_2_27_x86_64",
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
        ):
            platforms += ["--platform", p]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                *platforms,
                "-d",
                tmp,
                f"{name}=={version(name)}",
            ],
            check=True,
        )
        (whl,) = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
            z.extractall(DEST)


def ignore_locally() -> None:
    path = os.path.join(REPO, ".git", "info", "exclude")
    if os.path.isdir(os.path.dirname(path)):
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        if "/.devsite/" not in lines:
            with open(path, "a") as f:
                f.write("/.devsite/\n")


def main() -> None:
    shutil.rmtree(DEST, ignore_errors=True)
    os.makedirs(DEST)
    for name in PURE:
        copy_pure(name)
    for name in COMPILED:
        fetch_wheel(name)
    ignore_locally()
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(DEST) for f in fs)
    print(
        f"{DEST}: {size / 2**20:.1f} MiB. On the GPU machine (with .devsite/ copied along):\n"
        "  export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1; "
        "python3 -m benchmarks.run_all --device cuda --json bench.json --markdown bench.md"
    )


if __name__ == "__main__":
    main()
