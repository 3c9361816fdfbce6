"""Every command and Python snippet in README.md, docs/*.md and datasets/README.md stays true:

* each `.venv/bin/python SCRIPT` names a script that exists (or a `-m` module that imports),
* each `--flag` of the command is one the script defines,
* each config file named exists and loads with the command's `KEY VALUE` overrides (so a renamed
  key or config cannot hide in the docs),
* each ```python block compiles, and the ones that only need this repository run.

Commands that need data, weights or a GPU are not run here; the demo's and the predictor's run at
tiny size in tests/demo/test_demo.py and tests/test_predictor.py.
"""

import ast
import glob
import importlib.util
import os
import re
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(
    [os.path.join(REPO, "README.md"), os.path.join(REPO, "datasets", "README.md")]
    + glob.glob(os.path.join(REPO, "docs", "*.md"))
)
FENCE = re.compile(r"^```(\w*)\s*$")
PLACEHOLDER = re.compile(r"[<>]|\.\.\.|configs/mydata/")
KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _blocks(path: str):
    """(language, first line number, text) of every fenced block."""
    lang, start, lines = None, 0, []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            m = FENCE.match(line.strip())
            if m and lang is None:
                lang, start, lines = m.group(1) or "text", i + 1, []
            elif line.strip() == "```" and lang is not None:
                yield lang, start, "".join(lines)
                lang = None
            elif lang is not None:
                lines.append(line)


def _commands(path: str):
    """(line, argv) of every `.venv/bin/python ...` command in bash / sh / plain blocks."""
    for lang, start, text in _blocks(path):
        if lang not in ("bash", "sh", "shell", "text", "console"):
            continue
        joined = text.replace("\\\n", " ")
        for offset, line in enumerate(joined.splitlines()):
            line = line.split(" #")[0].strip()
            if not line.startswith(".venv/bin/python "):
                continue
            argv = shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", line))  # [--opt X] -> --opt X
            yield start + offset, argv[1:]


def _cases():
    for path in DOCS:
        for line, argv in _commands(path):
            yield pytest.param(argv, id=f"{os.path.relpath(path, REPO)}:{line}")


def _detectron2_default_flags() -> set[str]:
    from detectron2.engine import default_argument_parser

    return {o for a in default_argument_parser()._actions for o in a.option_strings}


@pytest.mark.parametrize("argv", list(_cases()))
def test_documented_command(argv):
    if argv[0] == "-m":
        module = argv[1]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"module {module} not found"
        source_file, rest = spec.origin, argv[2:]
    else:
        source_file, rest = os.path.join(REPO, argv[0]), argv[1:]
        assert os.path.isfile(source_file), f"{argv[0]} does not exist"
    with open(source_file) as f:
        source = f.read()
    known = set(re.findall(r"[\"'](--[a-z0-9-]+)[\"']", source))
    if "default_argument_parser" in source:
        known |= _detectron2_default_flags()
    flags = [a.split("=")[0] for a in rest if a.startswith("--")]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"{argv[0]} defines no {unknown}"

    # KEY VALUE overrides (train_net's positional opts, demo's --opts) must be valid config keys:
    # with the named config file, or with the defaults where the docs write a placeholder.
    opts = []
    for i, a in enumerate(rest):
        if KEY.match(a) and i + 1 < len(rest):
            opts += [a, rest[i + 1]]
    config = rest[rest.index("--config-file") + 1] if "--config-file" in rest else ""
    if PLACEHOLDER.search(config):
        config = ""
    elif config:
        assert os.path.isfile(os.path.join(REPO, config)), f"config {config} does not exist"
        config = os.path.join(REPO, config)
    if config or opts:
        from mask2former import load_config

        load_config(config, opts)


def test_every_doc_has_commands_or_snippets():
    """The parser finds the commands (a change of fence style would silently skip them)."""
    assert len(list(_cases())) >= 30


@pytest.mark.parametrize(
    "path,line,code",
    [
        pytest.param(p, s, t, id=f"{os.path.relpath(p, REPO)}:{s}")
        for p in DOCS
        for lang, s, t in _blocks(p)
        if lang == "python"
    ],
)
def test_python_snippet_compiles(path, line, code):
    ast.parse(code, filename=f"{path}:{line}")


@pytest.mark.slow  # starts every documented script once (~10 s of imports each on a 2-core CPU)
@pytest.mark.parametrize(
    "script",
    sorted({argv[0] for p in DOCS for _, argv in _commands(p) if argv[0].endswith(".py")}),
)
def test_documented_script_starts(script):
    """`--help` of every documented script: it imports and parses its arguments."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(
        [sys.executable, os.path.join(REPO, script), "--help"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage" in res.stdout.lower()
