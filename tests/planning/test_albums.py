"""Which folders get an album gain, from the results of a run."""

from __future__ import annotations

from pathlib import Path

from flac2all.audio.loudness import Loudness, album
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.planning.albums import Albums


def result(source: Path, mode: str, loudness: Loudness | None, status: Status = Status.SUCCESS) -> TaskResult:
    task = Task(source, mode, source.with_suffix(f".{mode}"), Action.ENCODE)
    return TaskResult(task, status, loudness=loudness)


def folder(root: Path, name: str, tracks: int) -> list[Path]:
    (root / name).mkdir()
    paths = [root / name / f"{i}.flac" for i in range(tracks)]
    for p in paths:
        p.write_bytes(b"")
    (root / name / "cover.jpg").write_bytes(b"")  # not a track
    return paths


def test_only_a_folder_whose_every_track_was_measured_and_encoded_gets_an_album_gain(tmp_path):
    loud, quiet = Loudness(-8.0, 0.9, (6200,), (10,)), Loudness(-20.0, 0.3, (5000,), (30,))
    whole, partial, failed, unmeasured = (folder(tmp_path, n, 2) for n in ("whole", "partial", "failed", "none"))
    albums = Albums()
    for mode in ("mp3", "opus"):
        albums.add(result(whole[0], mode, loud))
        albums.add(result(whole[1], mode, quiet))
        albums.add(result(partial[0], mode, loud))  # its other track was skipped: not in this run
        albums.add(result(failed[0], mode, loud))
        albums.add(result(unmeasured[0], mode, None))  # fill: it had gain tags of its own
        albums.add(result(unmeasured[1], mode, quiet))
    albums.add(result(failed[1], "mp3", quiet))
    albums.add(result(failed[1], "opus", None, Status.FAILED))
    (done,) = albums.complete()
    assert done.folder == tmp_path / "whole"
    assert done.album == album([loud, quiet])
    assert sorted((t.output.name, track) for t, track in done.outputs) == sorted(
        (f"{i}.{mode}", m) for i, m in ((0, loud), (1, quiet)) for mode in ("mp3", "opus")
    )


def test_a_silent_album_gets_no_gain(tmp_path):
    (only,) = folder(tmp_path, "silent", 1)
    albums = Albums()
    albums.add(result(only, "mp3", Loudness(None, 0.0)))
    assert albums.complete() == []
