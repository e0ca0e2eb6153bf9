"""The state's loudness and album tables (state_gains.py): which albums a
run has to judge, so that a run stopped between a track's measurement and
its album's retag, or an album whose retag failed, is taken up again by the
next run, and only that album."""

from __future__ import annotations

from pathlib import Path

from flac2all.audio.loudness import Loudness
from flac2all.model import SourceFacts
from flac2all.records import Record
from flac2all.state import State

LOUD, QUIET = Loudness(-9.5, 0.9, (3, 7), (1, 2)), Loudness(-20.0, 0.3, (5,), (4,))


def made(state: State, *sources: Path) -> None:
    """An mp3 output of each of ``sources`` recorded."""
    for source in sources:
        output = state.outdir / "mp3" / source.relative_to(state.input_dir).with_suffix(".mp3")
        state.put(Record(output, source, "mp3", SourceFacts(1, 2, "md5", "t", "p"), "s", 3, 4))


def test_a_track_measured_anew_leaves_its_album_to_judge_again_until_its_album_step(tmp_path):
    inp = tmp_path / "in"
    one, two = inp / "album" / "1.flac", inp / "album" / "2.flac"
    with State(tmp_path, inp) as state:
        made(state, one, two)
        state.put_loudness(one, "a", LOUD)
        state.put_loudness(two, "b", LOUD)
        state.put_album_tags(one.parent, "-8.50 dB 0.900000")
        assert state.folders_without_album() == []
        state.put_loudness(one, "a", LOUD)  # the same audio measured the same: nothing to judge
        assert state.folders_without_album() == []
        state.put_loudness(one, "c", QUIET)  # its audio changed; the run stopped here
    with State(tmp_path, inp) as state:
        assert state.folders_without_album() == [one.parent]
        assert state.album_tags(one.parent) != "-8.50 dB 0.900000"  # every output of it retagged
        state.put_album_tags(one.parent, "-5.00 dB 0.900000")
        assert state.folders_without_album() == []


def test_a_tag_album_with_a_track_measured_anew_is_judged_again_from_any_of_its_folders(tmp_path):
    inp = tmp_path / "in"
    one, two = inp / "disc a" / "1.flac", inp / "disc b" / "2.flac"
    key = ("Artist", "Album", "1")
    with State(tmp_path, inp) as state:
        made(state, one, two)
        state.put_loudness(one, "a", LOUD)
        state.put_loudness(two, "b", LOUD)
        state.put_album_tags(key, "-8.50 dB 0.900000")
        state.put_members(key, [one, two])
        assert state.folders_without_album(by_tags=True) == []
        state.put_loudness(two, "c", QUIET)
        assert sorted(state.folders_without_album(by_tags=True)) == [one.parent, two.parent]
        state.put_album_tags(key, "-6.00 dB 0.900000")
        assert state.folders_without_album(by_tags=True) == []


def test_judging_again_every_album_leaves_each_to_judge_until_it_is(tmp_path):
    inp = tmp_path / "in"
    one, two = inp / "a" / "1.flac", inp / "b" / "2.flac"
    with State(tmp_path, inp) as state:
        made(state, one, two)
        for source, md5 in ((one, "a"), (two, "b")):
            state.put_loudness(source, md5, LOUD)
            state.put_album_tags(source.parent, "-8.50 dB 0.900000")
        state.judge_again()  # --album-by changed
        assert sorted(state.folders_without_album()) == [one.parent, two.parent]
        state.put_album_tags(one.parent, "-8.50 dB 0.900000")  # one retagged; the other's retag failed
    with State(tmp_path, inp) as state:
        assert state.folders_without_album() == [two.parent]


def test_a_source_whose_outputs_are_gone_is_in_no_album_to_judge(tmp_path):
    inp = tmp_path / "in"
    kept, gone = inp / "a" / "1.flac", inp / "b" / "2.flac"
    with State(tmp_path, inp) as state:
        made(state, kept)
        state.put_loudness(kept, "a", LOUD)
        state.put_loudness(gone, "b", LOUD)  # its outputs deleted (or moved) since: no row of them
        assert state.folders_without_album() == [kept.parent]
        assert state.folders_without_album(by_tags=True) == [kept.parent]
