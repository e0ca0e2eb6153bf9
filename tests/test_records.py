"""The state's rows and the outputs up to date, as a mirror planned folder
by folder holds them: read a folder at a time or all at once, kept in
memory or on disk, the plan is the same."""

from __future__ import annotations

import os
import shutil

import mutagen.flac
import pytest

import flac2all
from flac2all import records, skips
from flac2all.model import Settings
from flac2all.skips import Skip, SkipLog
from tests.conftest import make_flac

MODES = ("mp3", "opus")


def test_a_skip_log_on_disk_is_the_one_in_memory(monkeypatch):
    """Costliest first, ties by place; by source then mode: alike whether
    the skips stayed in memory or were written to disk."""
    rows = [
        (Skip(f"/in/{n % 7}/{n}.flac", f"/out/{mode}/{n}.{mode}", mode, float(n % 3)), f"{n % 7}\0{n}\0")
        for n in range(40)
        for mode in MODES
    ]
    logs = {}
    for spill in (10**9, 5):
        monkeypatch.setattr(skips, "SPILL", spill)
        monkeypatch.setattr(skips, "WRITTEN_AT_ONCE", 3)
        log = SkipLog({"mp3": 0, "opus": 1})
        for start in range(0, len(rows), 6):
            chunk = rows[start : start + 6]
            log.add([s for s, _ in chunk], {s.source: os.fsencode(place) for s, place in chunk})
        logs[spill] = (list(log), list(log.by_source()), len(log))
        assert log.spilled is (spill == 5)
    assert logs[10**9] == logs[5]
    listed = logs[5][0]
    assert [s.cost for s in listed] == sorted((s.cost for s in listed), reverse=True)
    assert len(listed) == 80


def listing(settings: Settings) -> str:
    return flac2all.dry_run(settings).describe(settings)


@pytest.mark.slow
def test_a_mirror_read_a_folder_at_a_time_plans_as_one_read_at_once(tmp_path, monkeypatch):
    """A re-run after a retag, an album moved and one gone: the plan listed
    from a state read whole and from one read a folder at a time (as past
    ``records.RESIDENT`` rows) is the same, and names every change."""
    root = tmp_path / "music"
    for album in ("A", "B", "C"):
        for n in range(2):
            make_flac(root / album / f"{n}.flac", seconds=0.2, tags={"TITLE": f"{album}{n}"})
    out = tmp_path / "out"
    settings = Settings(input_dir=root, outdir=out, modes=MODES, threads=2)
    assert flac2all.convert(root, out, ",".join(MODES), threads=2).exit_status == 0
    song = mutagen.flac.FLAC(root / "A" / "0.flac")
    song["TITLE"] = "retagged"
    song.save()
    os.rename(root / "B", root / "B moved")
    shutil.rmtree(root / "C")
    monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", "1")
    listed = {}
    for resident in (10**9, 0):
        monkeypatch.setattr(records, "RESIDENT", resident)
        listed[resident] = listing(settings)
    assert listed[0] == listed[10**9]
    for action in ("retag:", "move:", "orphan:"):
        assert action in listed[0]
