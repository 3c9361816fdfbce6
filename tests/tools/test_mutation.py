"""tools/mutation.py: timed-out mutants are re-judged on the next run; the report's counts."""

import importlib.util
import os
import sqlite3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
    spec = importlib.util.spec_from_file_location(
        "mutation_tool", os.path.join(REPO, "tools", "mutation.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cache(workdir, rows):
    """A cache with mutmut 2's tables (the columns the tool reads): rows = (file, line, status)."""
    con = sqlite3.connect(os.path.join(workdir, ".mutmut-cache"))
    con.executescript(
        "CREATE TABLE sourcefile (id INTEGER PRIMARY KEY, filename TEXT);"
        "CREATE TABLE line (id INTEGER PRIMARY KEY, sourcefile INTEGER, line_number INTEGER);"
        "CREATE TABLE mutant (id INTEGER PRIMARY KEY, line INTEGER, status TEXT);"
    )
    files = {}
    for i, (name, number, status) in enumerate(rows, 1):
        fid = files.setdefault(name, len(files) + 1)
        con.execute("INSERT OR IGNORE INTO sourcefile VALUES (?, ?)", (fid, name))
        con.execute("INSERT INTO line VALUES (?, ?, ?)", (i, fid, number))
        con.execute("INSERT INTO mutant VALUES (?, ?, ?)", (i, i, status))
    con.commit()
    return con


def test_timeouts_of_the_module_only_are_retested(tmp_path, monkeypatch, capsys):
    tool = _load()
    monkeypatch.setattr(tool, "WORKDIR", str(tmp_path))
    a, b = "pkg/a.py", "pkg/b.py"
    rows = [(a, 1, "bad_timeout"), (a, 2, "ok_killed"), (a, 3, "bad_survived")]
    rows += [(a, 4, "bad_timeout"), (b, 1, "bad_timeout")]
    _cache(str(tmp_path), rows).close()
    tool._retry_timeouts(a)
    assert "re-testing 2 timed-out mutant(s) of pkg/a.py" in capsys.readouterr().out
    con = sqlite3.connect(os.path.join(tmp_path, ".mutmut-cache"))
    status = [s for (s,) in con.execute("SELECT status FROM mutant ORDER BY id")]
    assert status == ["untested", "ok_killed", "bad_survived", "untested", "bad_timeout"]


def test_report_counts_and_survivors(tmp_path, monkeypatch, capsys):
    tool = _load()
    monkeypatch.setattr(tool, "WORKDIR", str(tmp_path))
    a = "mask2former/modeling/matcher.py"
    rows = [(a, 10, "ok_killed"), (a, 11, "ok_suspicious"), (a, 12, "bad_survived")]
    rows += [(a, 13, "bad_timeout"), (a, 14, "untested")]
    _cache(str(tmp_path), rows).close()
    tool.report([a])
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[1:] == ["4", "2", "1", "1", "75.0", "(1", "untested)"]
    assert out[2].strip() == "alive: mutant 3 at line 12  (mutmut show 3)"
