"""Generating demo_shapes shows a progress bar (it takes ~30 s at full size)."""

from mask2former.data.datasets.builtin_demo import prepare_demo_shapes


def test_generation_reports_progress(tmp_path, capsys):
    for workers in (1, 2):
        root = tmp_path / f"w{workers}" / "demo_shapes"
        prepare_demo_shapes(str(root), splits={"val": (3, 0)}, workers=workers)
        err = capsys.readouterr().err
        assert "Generating demo_shapes" in err and "3/3" in err
