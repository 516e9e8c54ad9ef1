"""Every malformed file gives one clear error naming the dataset and the problem, and nothing is
written: the corpus in bad_files.py goes through the library and the real `crbm` CLI."""

from __future__ import annotations

import hashlib

import pytest
from bad_files import CASES, write_ljp

from crbm_core.cli import main
from crbm_core.errors import RecordingError
from crbm_core.ljp import import_ljp
from crbm_core.recording import read_recording


def test_corpus_is_large_enough():
    assert len(CASES) >= 15
    assert len({c.name for c in CASES}) == len(CASES)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _run(case, src, out):
    if case.kind == "ours":
        read_recording(src)
    elif case.kind == "labels":
        import_ljp(src.parent / "ljp.h5", out, region_labels=src)
    else:
        import_ljp(src, out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_file_gives_clear_error_and_writes_nothing(case, tmp_path):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = case.make(src_dir)
    before = _digest(src_dir)
    out = out_dir / "rec.h5"
    with pytest.raises(RecordingError) as err:
        _run(case, src, out)
    message = str(err.value)
    for word in case.expect:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message and len(message) < 400
    assert list(out_dir.iterdir()) == [], "nothing may be written on failure"
    assert _digest(src_dir) == before, "the source files are only read"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_reports_one_line_and_exit_status_2(case, tmp_path, capsys):
    src = case.make(tmp_path)
    out = tmp_path / "converted.h5"
    if case.kind == "ours":
        argv = ["info", str(src)]
    elif case.kind == "labels":
        argv = ["import", str(tmp_path / "ljp.h5"), "--region-labels", str(src), "-o", str(out)]
    else:
        argv = ["import", str(src), "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert all(word in err[0] for word in case.expect)
    assert not out.exists()


def test_failed_import_keeps_an_existing_output(tmp_path):
    good = write_ljp(tmp_path / "good.h5")
    out = tmp_path / "rec.h5"
    import_ljp(good, out)
    before = out.read_bytes()
    bad = (
        next(c for c in CASES if c.name == "spikes_nan").make(tmp_path / "bad")
        if (tmp_path / "bad").mkdir() is None
        else None
    )
    with pytest.raises(RecordingError):
        import_ljp(bad, out)
    assert out.read_bytes() == before
