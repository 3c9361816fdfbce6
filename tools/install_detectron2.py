#!/usr/bin/env python
"""Install Detectron2 v0.6 from PyPI as a pure-Python package, patched for today's stack.

Detectron2 has no PyPI release under its own name. ``pb1-detectron2==0.6`` is an sdist of upstream
v0.6's Python files (verified identical) *without* its C++ sources, so ``pip install`` fails, and
unpatched v0.6 does not import on Python 3.11 / NumPy 1.26 / Pillow >= 10 / torch 2.x.

This script:

1. leaves an importable detectron2 alone (e.g. upstream built from git with its compiled ops);
2. downloads the pinned sdist from the package index and checks its sha256;
3. applies the small, targeted compatibility fixes listed in ``PATCHES`` (each one names the
   upstream commit that fixed the same line after v0.6) to a temporary copy;
4. ``pip install``s that copy without building any extension (``--no-deps``; the dependencies are
   pinned in ``requirements/constraints.txt`` and installed by the Makefile).

The repository's tracked files are never touched. Every patch must apply exactly once, otherwise
the script stops and says which file and which fix did not match.

Usage: ``python tools/install_detectron2.py [--cache-dir DIR] [--force]``
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

# Replaces `from detectron2 import _C` where the compiled ops are used. Any use of a missing op
# raises a RuntimeError that says what is missing and how to get it; importing stays possible.
MISSING_C = """try:
    from detectron2 import _C
except ImportError:  # [mask2former patch] installed from PyPI without compiled ops

    class _MissingCompiledOps:
        def __getattr__(self, name):
            raise RuntimeError(
                f"detectron2's compiled op '{name}' is not available: this detectron2 was "
                "installed from PyPI (pb1-detectron2) without its C++/CUDA sources, so rotated "
                "boxes, CUDA deformable convolution and the fast COCO evaluation are missing. "
                "Mask2Former does not need them. To get them, install upstream detectron2 from "
                "source (pip uninstall -y pb1-detectron2; pip install --no-build-isolation "
                "'git+https://github.com/facebookresearch/detectron2.git') and re-run the setup."
            )

    _C = _MissingCompiledOps()
"""

# (file, old, new, count, why). `count` is how many times `old` must occur.
PATCHES = [
    # --- packaging: the sdist has no csrc and no top-level configs/ ---------------------------
    (
        "setup.py",
        "ext_modules=get_extensions(),",
        "ext_modules=[],",
        1,
        "sdist lacks detectron2/layers/csrc: build no extension",
    ),
    (
        "setup.py",
        'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},',
        1,
        "the sdist ships the model-zoo configs inside the package already",
    ),
    # --- compiled ops imported at module level (upstream 710e7795, ac31916c) ------------------
    (
        "detectron2/layers/deform_conv.py",
        "from detectron2 import _C\n",
        MISSING_C,
        1,
        "import without _C (upstream 710e7795)",
    ),
    (
        "detectron2/layers/rotated_boxes.py",
        "from detectron2 import _C\n",
        MISSING_C,
        1,
        "import without _C (upstream ac31916c)",
    ),
    (
        "detectron2/layers/roi_align_rotated.py",
        "from detectron2 import _C\n",
        MISSING_C,
        1,
        "import without _C (upstream ac31916c)",
    ),
    (
        "detectron2/evaluation/fast_eval_api.py",
        "from detectron2 import _C\n",
        MISSING_C,
        1,
        "import without _C (upstream 710e7795)",
    ),
    (
        "detectron2/layers/nms.py",
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)",
        "    if not hasattr(torch.ops.detectron2, 'nms_rotated'):  # [mask2former patch]\n"
        "        from .rotated_boxes import _C as _maybe_missing\n"
        "        _maybe_missing.nms_rotated  # raises the clear 'compiled op missing' error\n"
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)",
        1,
        "clear error instead of 'No such operator detectron2::nms_rotated'",
    ),
    # COCOEvaluator: fall back to pycocotools (and say so once) when _C is missing.
    (
        "detectron2/evaluation/coco_evaluation.py",
        "        self._use_fast_impl = use_fast_impl\n",
        "        self._use_fast_impl = use_fast_impl\n"
        "        if use_fast_impl and not _fast_eval_available():  # [mask2former patch]\n"
        "            self._use_fast_impl = False\n",
        1,
        "fall back to pycocotools COCOeval (upstream 710e7795)",
    ),
    (
        "detectron2/evaluation/coco_evaluation.py",
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n\n\n"
        "_FAST_EVAL_WARNED = []\n\n\n"
        "def _fast_eval_available():  # [mask2former patch]\n"
        "    try:\n"
        "        from detectron2 import _C  # noqa: F401\n"
        "    except ImportError:\n"
        "        if not _FAST_EVAL_WARNED:\n"
        "            _FAST_EVAL_WARNED.append(True)\n"
        "            logging.getLogger(__name__).warning(\n"
        '                "detectron2\'s compiled fast COCO evaluation is not installed; "\n'
        "                'using the official pycocotools COCOeval (same numbers, slower).'\n"
        "            )\n"
        "        return False\n"
        "    return True\n",
        1,
        "fall back to pycocotools COCOeval (upstream 710e7795)",
    ),
    # --- Pillow >= 10 (upstream ff53992b) -------------------------------------------------------
    (
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        1,
        "Image.LINEAR was removed in Pillow 10 (upstream ff53992b)",
    ),
    # --- Python >= 3.11 (upstream 400a49c1) ----------------------------------------------------
    (
        "detectron2/data/common.py",
        "self._rng.sample(self._fallback_candidates, k=1)",
        "self._rng.sample(list(self._fallback_candidates), k=1)",
        1,
        "random.sample needs a sequence on Python 3.11 (upstream 400a49c1)",
    ),
    # --- torch >= 2.0 schedulers subclass LRScheduler (upstream 21080971) ----------------------
    (
        "detectron2/engine/hooks.py",
        "torch.optim.lr_scheduler._LRScheduler",
        "torch.optim.lr_scheduler.LRScheduler",
        2,
        "save/restore built-in LR schedulers' state on resume (upstream 21080971)",
    ),
    # --- setuptools >= 81 has no pkg_resources (not fixed upstream) ----------------------------
    (
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "",
        1,
        "pkg_resources is gone from setuptools >= 81",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", '
        'os.path.join("configs", config_path)\n    )',
        'cfg_file = os.path.join(os.path.dirname(__file__), "configs", config_path)',
        1,
        "pkg_resources is gone from setuptools >= 81",
    ),
]

# NumPy >= 1.24 removed the aliases np.bool / np.int / np.float / np.str
# (upstream 857d5de2, 027099d3, 54dd614e, 654570a2). file -> number of aliases to rewrite.
NUMPY_ALIAS_FILES = {
    "detectron2/structures/masks.py": 3,
    "detectron2/evaluation/sem_seg_evaluation.py": 7,
    "detectron2/evaluation/pascal_voc_evaluation.py": 2,
    "detectron2/data/datasets/pascal_voc.py": 1,
    "detectron2/data/build.py": 2,
    "detectron2/utils/visualizer.py": 3,
    "detectron2/utils/video_visualizer.py": 1,
}
NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|str)\b(?![_\d])")


def detectron2_location(python: str):
    """Where `python` imports detectron2 from, or None if it cannot."""
    probe = "import detectron2, os; print(os.path.dirname(detectron2.__file__))"
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def download_sdist(cache_dir: Path) -> Path:
    """Fetch the pinned sdist through the package index (PEP 503) and verify its sha256."""
    target = cache_dir / SDIST_FILE
    if target.exists() and sha256(target) == SDIST_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    page_url = f"{index_url()}/{SDIST_NAME}/"
    with urllib.request.urlopen(page_url, timeout=120) as resp:
        page = resp.read().decode()
    links = re.findall(r'href="([^"]*' + re.escape(SDIST_FILE) + r'[^"]*)"', page)
    if not links:
        sys.exit(f"error: {SDIST_FILE} is not listed at {page_url}")
    url = urllib.parse.urljoin(page_url, links[0].split("#")[0])
    print(f"downloading {url}")
    tmp = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=300) as resp, open(tmp, "wb") as f:
        shutil.copyfileobj(resp, f)
    digest = sha256(tmp)
    if digest != SDIST_SHA256:
        tmp.unlink()
        sys.exit(
            f"error: sha256 of {url} is {digest}, expected {SDIST_SHA256}; refusing to install"
        )
    os.replace(tmp, target)
    return target


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def apply_patches(src: Path) -> None:
    for rel, old, new, count, why in PATCHES:
        path = src / rel
        text = path.read_text()
        found = text.count(old)
        if found != count:
            sys.exit(f"error: patch '{why}' expected {count} match(es) in {rel}, found {found}")
        path.write_text(text.replace(old, new))
    for rel, count in NUMPY_ALIAS_FILES.items():
        path = src / rel
        text, n = NUMPY_ALIAS.subn(lambda m: m.group(1), path.read_text())
        if n != count:
            sys.exit(f"error: expected {count} removed NumPy aliases in {rel}, found {n}")
        path.write_text(text)
    print(f"applied {len(PATCHES)} patches and {len(NUMPY_ALIAS_FILES)} NumPy-alias fixes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mask2former",
    )
    parser.add_argument(
        "--force", action="store_true", help="reinstall even if detectron2 is importable"
    )
    args = parser.parse_args()

    where = detectron2_location(sys.executable)
    if where and not args.force:
        print(f"detectron2 is already importable from {where}; leaving it alone")
        return
    sdist = download_sdist(args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        apply_patches(src)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-build-isolation",
                "--no-deps",
                "--no-cache-dir",
                "-q",
                str(src),
            ],
            check=True,
        )
    print(f"installed detectron2 {SDIST_VERSION} (pure Python, patched) into {sys.prefix}")


if __name__ == "__main__":
    main()
