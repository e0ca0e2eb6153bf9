"""Which folders get an album gain, and which outputs are retagged with it,
from the results of a run and what the state recorded."""

from __future__ import annotations

from pathlib import Path

from flac2all.audio.loudness import Loudness, album
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.planning.albums import Albums
from flac2all.records import Row
from flac2all.tags import gain

LOUD, QUIET = Loudness(-8.0, 0.9, (6200,), (10,)), Loudness(-20.0, 0.3, (5000,), (30,))


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


def row(source: Path, mode: str = "mp3") -> tuple[str, Row]:
    return str(source.with_suffix(f".{mode}")), Row(
        str(source), mode, 1, 2, f"md5 of {source.name}", "", "", "h", 3, 4, ""
    )


def nothing_recorded(source: Path, md5: str) -> None:
    return None


def test_only_a_folder_whose_every_track_is_measured_and_encoded_gets_an_album_gain(tmp_path):
    whole, partial, failed, unmeasured = (folder(tmp_path, n, 2) for n in ("whole", "partial", "failed", "none"))
    albums = Albums()
    for mode in ("mp3", "opus"):
        albums.add(result(whole[0], mode, LOUD))
        albums.add(result(whole[1], mode, QUIET))
        albums.add(result(partial[0], mode, LOUD))  # its other track was skipped, and never measured
        albums.add(result(failed[0], mode, LOUD))
        albums.add(result(unmeasured[0], mode, None))  # fill: it had gain tags of its own
        albums.add(result(unmeasured[1], mode, QUIET))
    albums.add(result(failed[1], "mp3", QUIET))
    albums.add(result(failed[1], "opus", None, Status.FAILED))
    judged = {r.folder.name: r for r in albums.retags(lambda folder: {}, nothing_recorded, lambda folder: None)}
    assert sorted(judged) == ["none", "partial", "whole"]  # "failed": judged again by a run where nothing fails
    assert all(judged[name].album is None and judged[name].outputs == () for name in ("none", "partial"))
    done = judged["whole"]
    assert done.album == album([LOUD, QUIET])
    assert done.tags == " ".join(v for _, v in gain.pairs(done.album, "ALBUM"))
    assert [(t.output.name, track) for t, track in done.outputs] == [
        ("0.mp3", LOUD),
        ("0.opus", LOUD),
        ("1.mp3", QUIET),
        ("1.opus", QUIET),
    ]


def test_a_track_added_to_an_album_retags_the_outputs_of_the_others_with_the_new_album_gain(tmp_path):
    old, new = folder(tmp_path, "album", 2)
    albums = Albums()
    albums.add(result(new, "mp3", QUIET))  # the old track's output was up to date: skipped
    rows = dict([row(old), row(new)])
    recorded = {(old, f"md5 of {old.name}"): LOUD}
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: recorded.get((s, md5)), lambda folder: "-10 dB 0.9")
    assert done.album == album([LOUD, QUIET])
    assert [(t.output.name, t.action, t.settings_hash, track) for t, track in done.outputs] == [
        ("0.mp3", Action.RETAG, "h", LOUD),
        ("1.mp3", Action.ENCODE, "", QUIET),
    ]
    # The same album gain as the others carry already: only this run's outputs are tagged.
    (same,) = albums.retags(lambda folder: rows, lambda s, md5: recorded.get((s, md5)), lambda folder: done.tags)
    assert [t.output.name for t, _ in same.outputs] == ["1.mp3"]
    # A measurement of other audio than the source's now does not count.
    (unknown,) = albums.retags(lambda folder: rows, lambda s, md5: None, lambda folder: None)
    assert unknown.album is None and unknown.tags == "" and unknown.outputs == ()


def test_a_track_gone_changes_the_album_of_the_others_and_a_silent_album_gets_no_gain(tmp_path):
    kept, *_ = folder(tmp_path, "album", 1)
    albums = Albums()
    albums.add(TaskResult(Task(kept.parent / "gone.flac", "mp3", Path("/o/gone.mp3"), Action.DELETE), Status.SUCCESS))
    rows = dict([row(kept)])
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: LOUD, lambda folder: "old")
    assert [t.output.name for t, _ in done.outputs] == ["0.mp3"] and done.album == album([LOUD])
    (silent,) = albums.retags(lambda folder: rows, lambda s, md5: Loudness(None, 0.0), lambda folder: None)
    assert silent.album is None and silent.outputs == ()


def test_an_output_retagged_from_its_source_gets_its_track_gain_back_without_an_album(tmp_path):
    edited, unmeasured = folder(tmp_path, "album", 2)
    albums = Albums()
    task = Task(edited, "mp3", edited.with_suffix(".mp3"), Action.RETAG, settings_hash="h")
    albums.add(TaskResult(task, Status.SUCCESS))  # its source's tags changed
    rows = dict([row(edited), row(unmeasured)])
    recorded = {(edited, f"md5 of {edited.name}"): LOUD}  # the other track was never measured
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: recorded.get((s, md5)), lambda folder: None)
    assert done.album is None and done.outputs == ((task, LOUD),)


def test_a_folder_an_earlier_run_measured_and_left_without_album_is_judged_though_nothing_ran_there(tmp_path):
    (track,) = folder(tmp_path, "album", 1)
    albums = Albums()
    albums.touch(track.parent)
    rows = dict([row(track)])
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: LOUD, lambda folder: None)
    assert done.album == album([LOUD]) and [t.output.name for t, _ in done.outputs] == ["0.mp3"]


def test_outputs_of_a_mode_that_carries_no_tags_or_is_unknown_are_left_alone(tmp_path):
    (track,) = folder(tmp_path, "album", 1)
    albums = Albums()
    albums.add(result(track, "mp3", LOUD))
    rows = dict([row(track, "test"), row(track, "nosuchmode"), row(track, "mp3")])
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: LOUD, lambda folder: None)
    assert [t.output.name for t, _ in done.outputs] == ["0.mp3"]
