"""engine.run as a watch batch: the same run, its rows appended to the log."""

from __future__ import annotations

import shutil
from pathlib import Path

from flac2all.model import Settings
from flac2all.running import engine
from tests.conftest import make_flac, read_log


def test_a_batch_appends_what_it_did_to_the_log_under_one_header(tmp_path, library):
    out = tmp_path / "out"
    settings = Settings(input_dir=library, outdir=out, modes=("mp3",), threads=2, delete=True)
    engine.run(settings)
    first = read_log(out)
    make_flac(library / "Album C" / "04 four.flac", seconds=0.2)
    (library / "Album B" / "03 three.flac").unlink()
    report = engine.run(settings, batch=True)
    assert report.exit_status == 0 and report.log_path == out / "conversion_results.log"
    rows = read_log(out)  # one header: read_log checks the first line is it, and every row's width
    assert rows[: len(first)] == first
    added = {Path(r["infile"]).name: r["conversion_status"] for r in rows[len(first) :]}
    # What the batch did; not the two outputs it found up to date.
    assert added == {"04 four.flac": "SUCCESS", "03 three.flac": "SUCCESS (deleted orphan)"}


def test_a_batch_without_a_log_yet_writes_its_header(tmp_path, library):
    out = tmp_path / "out"
    settings = Settings(input_dir=library, outdir=out, modes=("mp3",), threads=2)
    engine.run(settings)
    (out / "conversion_results.log").unlink()
    shutil.rmtree(out / "mp3" / "Album B")
    engine.run(settings, batch=True)
    assert [Path(r["infile"]).name for r in read_log(out)] == ["03 three.flac"]
