"""A FLAC with a CUE sheet split on a cluster as a local run splits it: the
master plans the tracks, each job carries them to a real worker, which
decodes the source once and cuts it; the master believes each track's
output by its own checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutagen.flac import FLAC
from mutagen.oggopus import OggOpus

from tests.cluster.processes import start_master, start_worker
from tests.conftest import read_log, run_flac2all
from tests.running.test_cue_split import BOUNDS, album, outputs, pcm

pytestmark = pytest.mark.timeout(180)

NAMES = ["01 Первая", "02 Second", "03 Third"]


def cluster_run(tmp_path: Path, workers: int) -> None:
    """flac and opus on a master and ``workers`` real workers."""
    master, port = start_master("flac,opus", tmp_path / "out", tmp_path / "in")
    started = []
    try:
        started = [start_worker(port, 1) for _ in range(workers)]
        assert master.wait(120) == 0, master.output
        for worker in started:
            assert worker.wait(30) == 0, worker.output
    finally:
        master.kill()
        for worker in started:
            worker.kill()


@pytest.mark.slow
def test_a_cue_album_is_split_on_the_workers_bit_exact_with_its_tags_and_a_rerun_does_nothing(tmp_path):
    source = album(tmp_path)
    out = tmp_path / "out"
    cluster_run(tmp_path, 2)
    flacs = outputs(out, "flac", "flac")
    assert [p.stem for p in flacs] == NAMES
    assert b"".join(pcm(p) for p in flacs) == pcm(source)
    frames = [b - a for a, b in zip(BOUNDS, BOUNDS[1:], strict=False)]
    assert [FLAC(p).info.total_samples for p in flacs] == frames
    opuses = outputs(out, "opus", "opus")
    assert [p.stem for p in opuses] == NAMES
    for opus, n in zip(opuses, frames, strict=True):
        assert abs(OggOpus(opus).info.length - n / 44100) < 0.1
    second = FLAC(flacs[1])
    assert second["TITLE"] == ["Second"] and second["ARTIST"] == ["Guest"] and second["ISRC"] == ["GBAYE0000001"]
    assert second["ALBUM"] == ["Альбом"] and second["TRACKNUMBER"] == ["2"] and second["TRACKTOTAL"] == ["3"]
    assert second["LABEL"] == ["Kept"]
    assert OggOpus(opuses[0])["TITLE"] == ["Первая"]
    rows = read_log(out)
    made = sorted(Path(row["outfile"]).relative_to(out).as_posix() for row in rows)
    assert made == sorted(f"{mode}/Band/Disc/{name}.{mode}" for mode in ("flac", "opus") for name in NAMES)
    assert {row["conversion_status"] for row in rows} == {"SUCCESS"}
    assert {row["infile"] for row in rows} == {str(source)}
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.suffix in (".flac", ".opus")}
    # Nothing to hand out: the master ends without waiting for a worker.
    again = run_flac2all(
        "flac,opus", tmp_path / "in", "-o", out, "-m", "--insecure", "--bind", "127.0.0.1", "--port", "0"
    )
    assert again.returncode == 0, again.stderr
    assert "nothing to do: 6 outputs up to date" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.suffix in (".flac", ".opus")} == before
    assert {row["conversion_status"] for row in read_log(out)} <= {"SUCCESS (skipped: up to date)"}
