#!/usr/bin/env python
"""`make mutation`: mutation testing (mutmut 2) of the core modules, one narrow test set each.

    python tools/mutation.py                      # every core module (hours on a CPU)
    python tools/mutation.py mask2former/modeling/matcher.py [more modules ...]
    python tools/mutation.py --list               # the modules and the tests that judge them
    python tools/mutation.py --report             # scores from the cache, nothing run

mutmut rewrites the module under test in place, once per mutant, and runs the module's tests
(below, `-x`: the first failure kills the mutant). So that an interrupted run can never leave the
working tree mutated, everything runs in a scratch copy, build/mutation/ (git-tracked and
untracked-unignored files, refreshed at each call); mutmut's cache (.mutmut-cache) lives there
and is kept between calls: a second call skips the mutants already killed and re-tests the
others if the tests changed. Inspect a survivor with `cd build/mutation && mutmut show ID`, but
never while a run is going on (`show` re-reads the source, then mutated, into the cache).

Speed: a server process imports torch, detectron2 & co once and forks one pytest per mutant
(the runner is `tools/mutation.py --client -- PYTEST ARGS`), about 5 s less per mutant.

Not part of `make test` or CI: one module takes 5-40 minutes. Scores measured so far, the
survivors judged equivalent and why: docs/testing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = os.path.join(REPO, "build", "mutation")

# Module -> the test files that judge it (those that exist; the mirrored file first). Keep them
# narrow and fast: they run once per mutant, and `-x` stops at the first failure.
CORE: dict[str, list[str]] = {
    "mask2former/modeling/matcher.py": ["tests/modeling/test_matcher.py"],
    "mask2former/modeling/criterion.py": ["tests/modeling/test_criterion.py"],
    "mask2former/modeling/pixel_decoder/msdeformattn.py": [
        "tests/modeling/pixel_decoder/test_msdeformattn.py",
    ],
    "mask2former/modeling/pixel_decoder/ops/functional.py": [
        "tests/modeling/pixel_decoder/ops/test_functional.py",
    ],
    "mask2former/modeling/pixel_decoder/ops/module.py": [
        "tests/modeling/pixel_decoder/ops/test_module.py",
        "tests/modeling/pixel_decoder/test_msdeformattn.py",
    ],
    "mask2former/modeling/transformer_decoder/mask2former_transformer_decoder.py": [
        "tests/modeling/transformer_decoder/test_mask2former_transformer_decoder.py",
    ],
    "mask2former/modeling/postprocessing.py": ["tests/modeling/test_postprocessing.py"],
    "mask2former/evaluation/sem_seg_evaluation.py": ["tests/evaluation/test_sem_seg_evaluation.py"],
    "mask2former/evaluation/semantic_pq.py": [
        "tests/evaluation/test_semantic_pq.py",
        "tests/evaluation/test_sem_seg_evaluation.py",
    ],
    "mask2former/evaluation/panoptic_evaluation.py": [
        "tests/evaluation/test_panoptic_evaluation.py",
    ],
    "mask2former/solver/build.py": ["tests/solver/test_build.py"],
    "mask2former/config.py": ["tests/test_config_defaults.py", "tests/test_config.py"],
}

# mutmut 2 names a killed mutant whose tests ran longer than usual "suspicious": still killed.
_KILLED = ("ok_killed", "ok_suspicious")
_SURVIVED = ("bad_survived",)
_SOCKET = os.path.join(WORKDIR, ".pytest-server.sock")
# Imported once by the server, before it forks a pytest per mutant (never mask2former itself,
# which must be imported fresh, mutated, in each child).
# timm alone is ~4 s of the ~5 s that importing mask2former takes.
_PRELOAD = (
    "torch torchvision numpy scipy.optimize cv2 PIL.Image pycocotools.mask panopticapi.utils "
    "fvcore.common.param_scheduler detectron2.config detectron2.data detectron2.structures "
    "detectron2.layers detectron2.modeling detectron2.solver detectron2.evaluation "
    "detectron2.projects.point_rend timm pytest"
).split()
_CHILD_LIMIT_S = 600  # a mutant that loops forever is stopped here (mutmut stops it earlier)


def _tests_for(module: str) -> list[str]:
    found = [t for t in CORE[module] if os.path.exists(os.path.join(REPO, t))]
    if not found:
        raise SystemExit(f"mutation: none of the tests listed for {module} exist: {CORE[module]}")
    return found


def _sync_workdir() -> None:
    """Copy the tree's files (tracked + untracked-unignored) into WORKDIR, keeping its cache."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src, dst = os.path.join(REPO, rel), os.path.join(WORKDIR, rel)
        if not os.path.isfile(src):
            continue  # deleted but not yet committed
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)


def serve(sock_path: str) -> None:
    """Fork-per-request pytest server: imports torch & co once, not once per mutant (~5 s)."""
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    assert not any(m.split(".")[0] == "mask2former" for m in sys.modules), "mask2former preloaded"
    for stale in (sock_path, sock_path + ".tmp"):
        if os.path.exists(stale):
            os.unlink(stale)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path + ".tmp")
    server.listen(1)
    os.rename(sock_path + ".tmp", sock_path)  # appears only once it accepts connections
    print("mutation: pytest server ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile().readline())
            pid = os.fork()
            if pid == 0:  # child: a fresh interpreter state for mask2former, run pytest
                server.close()
                signal.alarm(_CHILD_LIMIT_S)
                os.chdir(request["cwd"])
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                import pytest

                os._exit(int(pytest.main(request["args"])))
            # The client's connection closes when mutmut kills it on a timeout: stop the child.
            conn.setblocking(False)
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                try:
                    if conn.recv(1) == b"":
                        os.kill(pid, signal.SIGKILL)
                except BlockingIOError:
                    pass
                time.sleep(0.05)
            rc = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall(f"{rc}\n".encode())
            except OSError:
                pass


def client(sock_path: str, args: list[str]) -> int:
    """mutmut's runner: one pytest run in the server. Exit 0 only when pytest passed, else 1
    (mutmut 2 counts only exit code 1 as a kill; a collection error, exit 2, would survive)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    conn.sendall((json.dumps({"cwd": os.getcwd(), "args": args}) + "\n").encode())
    reply = conn.makefile().readline().strip()
    return 0 if reply == "0" else 1


def _retry_timeouts(module: str) -> None:
    """Mark the module's timed-out mutants untested again, so this run re-judges them: on a
    shared CPU a slow run, not the mutant, is the usual cause; a mutant that really hangs the
    tests times out again."""
    cache = os.path.join(WORKDIR, ".mutmut-cache")
    if not os.path.exists(cache):
        return
    con = sqlite3.connect(cache)
    with con:
        n = con.execute(
            "UPDATE mutant SET status = 'untested' WHERE status = 'bad_timeout' AND line IN "
            "(SELECT line.id FROM line JOIN sourcefile ON line.sourcefile = sourcefile.id "
            "WHERE sourcefile.filename = ?)",
            (module,),
        ).rowcount
    con.close()
    if n:
        print(f"mutation: re-testing {n} timed-out mutant(s) of {module}", flush=True)


def _run_module(module: str) -> int:
    _retry_timeouts(module)
    tests = " ".join(_tests_for(module))
    python = sys.executable
    script = os.path.join(WORKDIR, "tools", "mutation.py")
    runner = f"{python} {script} --client -- -x -q -p no:cacheprovider -m 'not slow' {tests}"
    cmd = [python, "-m", "mutmut", "run", "--paths-to-mutate", module, "--runner", runner]
    cmd += ["--tests-dir", "tests", "--simple-output", "--no-progress", "--CI"]
    cmd += ["--test-time-base", "30", "--test-time-multiplier", "3"]
    print(f"mutation: {module}\n  tests: {tests}", flush=True)
    return subprocess.run(cmd, cwd=WORKDIR).returncode


def report(modules: list[str]) -> None:
    """Killed / survived / timed-out mutants per module, from mutmut's cache."""
    cache = os.path.join(WORKDIR, ".mutmut-cache")
    if not os.path.exists(cache):
        print("mutation: no cache yet; run a module first")
        return
    con = sqlite3.connect(cache)
    rows = con.execute(
        "SELECT sourcefile.filename, mutant.status, mutant.id, line.line_number "
        "FROM mutant JOIN line ON mutant.line = line.id "
        "JOIN sourcefile ON line.sourcefile = sourcefile.id"
    ).fetchall()
    print(f"{'module':<70} {'mutants':>7} {'killed':>6} {'alive':>5} {'t/o':>4} {'score':>6}")
    for module in modules:
        mine = [r for r in rows if r[0] == module]
        if not mine:
            continue
        killed = sum(r[1] in _KILLED for r in mine)
        alive = [r for r in mine if r[1] in _SURVIVED]
        timeout = sum(r[1] == "bad_timeout" for r in mine)
        untested = sum(r[1] == "untested" for r in mine)
        judged = killed + len(alive) + timeout
        score = f"{100 * (killed + timeout) / judged:.1f}" if judged else "-"
        note = f"  ({untested} untested)" if untested else ""
        print(f"{module:<70} {judged:>7} {killed:>6} {len(alive):>5} {timeout:>4} {score:>6}{note}")
        for _, _, mid, line in sorted(alive, key=lambda r: r[3]):
            print(f"    alive: mutant {mid} at line {line}  (mutmut show {mid})")


def main() -> None:
    # Internal modes (the server and mutmut's runner run from the scratch copy of this script,
    # so they take the socket from the environment).
    if sys.argv[1:2] == ["--serve"]:
        return serve(os.environ["MUTATION_SOCKET"])
    if sys.argv[1:3] == ["--client", "--"]:
        raise SystemExit(client(os.environ["MUTATION_SOCKET"], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: every core module)")
    parser.add_argument("--list", action="store_true", help="print modules and their tests")
    parser.add_argument("--report", action="store_true", help="only print scores from the cache")
    args = parser.parse_args()
    modules = args.modules or list(CORE)
    unknown = [m for m in modules if m not in CORE]
    if unknown:
        raise SystemExit(f"mutation: unknown module(s) {unknown}; valid: {', '.join(CORE)}")
    if args.list:
        for m in modules:
            print(f"{m}\n    {' '.join(_tests_for(m))}")
        return
    if not args.report:
        os.makedirs(WORKDIR, exist_ok=True)
        _sync_workdir()
        # Every process imports the scratch copy: its tree first on the path.
        os.environ["PYTHONPATH"] = WORKDIR + os.pathsep + os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        os.environ["MUTATION_SOCKET"] = _SOCKET
        if os.path.exists(_SOCKET):
            os.unlink(_SOCKET)
        server = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=WORKDIR)
        try:
            while not os.path.exists(_SOCKET):
                if server.poll() is not None:
                    raise SystemExit("mutation: the pytest server failed to start")
                time.sleep(0.2)
            for m in modules:
                if _run_module(m) != 0:
                    raise SystemExit(f"mutation: mutmut failed on {m} (see its output above)")
        finally:
            server.kill()
    report(modules)


if __name__ == "__main__":
    main()
