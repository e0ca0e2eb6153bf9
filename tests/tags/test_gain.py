"""Gain tags under --replaygain keep|fill|compute|off: measured from the
decode of a real run, read back from every format with mutagen, and
checked against loudgain and RFC 7845's arithmetic for Opus."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
from pathlib import Path

import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from flac2all.audio.loudness import Loudness
from flac2all.model import Action, AudioInfo, OpusGain, ReplayGain, Status, Task, TaskResult
from flac2all.tags import gain
from flac2all.tags.source import SourceMeta
from tests.conftest import audio_bytes, read_log, require, run_flac2all

pytest.importorskip("scipy.signal")

MODES = "mp3,vorbis,opus,flac,aac"


def gains(out: Path, name: str) -> dict[str, dict[str, str]]:
    """Each format's gain tags of output ``name`` (no extension), as a player reads them."""
    found: dict[str, dict[str, str]] = {}
    f = FLAC(out / "flac" / f"{name}.flac")
    found["flac"] = {k.upper(): v for k, v in f.tags if gain.is_gain_key(k)}
    v = OggVorbis(out / "vorbis" / f"{name}.ogg")
    found["vorbis"] = {k.upper(): v for k, v in v.tags if gain.is_gain_key(k)}
    o = OggOpus(out / "opus" / f"{name}.opus")
    found["opus"] = {k.upper(): v for k, v in o.tags if gain.is_gain_key(k)}
    t = ID3(out / "mp3" / f"{name}.mp3")
    found["mp3"] = {f.desc: f.text[0] for f in t.getall("TXXX") if gain.is_gain_key(f.desc)}
    m = MP4(out / "aac" / f"{name}.m4a").tags
    found["aac"] = {
        k.split(":", 2)[2]: bytes(vals[0]).decode()
        for k, vals in m.items()
        if k.startswith("----:com.apple.iTunes:") and gain.is_gain_key(k.split(":", 2)[2])
    }
    return found


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A sine without gain tags, and pink noise whose tags say its gains."""
    root = tmp_path_factory.mktemp("gain") / "in"
    root.mkdir()
    for name, effects in (("plain", ["sine", "997", "vol", "0.5"]), ("tagged", ["pinknoise", "vol", "0.3"])):
        subprocess.run(
            ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(root / f"{name}.flac"), "synth", "1.5"]
            + effects,
            check=True,
        )
    subprocess.run(
        [
            "metaflac",
            "--set-tag=REPLAYGAIN_TRACK_GAIN=-1.00 dB",
            "--set-tag=REPLAYGAIN_TRACK_PEAK=0.5",
            "--set-tag=REPLAYGAIN_ALBUM_GAIN=-2.00 dB",
            str(root / "tagged.flac"),
        ],
        check=True,
    )
    return root


@pytest.fixture(scope="module")
def runs(library: Path, tmp_path_factory) -> dict[str, Path]:
    """The library converted into every format under each policy."""
    out = {}
    for policy in ReplayGain:
        outdir = tmp_path_factory.mktemp(policy.value)
        run = run_flac2all(MODES, "--replaygain", policy.value, "-o", outdir, library)
        assert run.returncode == 0, run.stdout + run.stderr
        assert all("SUCCESS" == row["conversion_status"] for row in read_log(outdir))
        out[policy.value] = outdir
    return out


def loudgain_track(path: Path) -> tuple[float, float]:
    """loudgain's (track gain dB, true peak) of ``path``."""
    require("loudgain")
    out = subprocess.run(["loudgain", "-q", "-O", str(path)], check=True, capture_output=True, text=True).stdout
    cells = out.splitlines()[1].split("\t")
    return float(cells[8].split()[0]), float(cells[3])


@pytest.mark.slow
def test_compute_writes_the_measured_gain_into_every_format(runs, library):
    for name in ("plain", "tagged"):
        want_gain, want_peak = loudgain_track(library / f"{name}.flac")
        found = gains(runs["compute"], name)
        for fmt in ("flac", "vorbis", "mp3", "aac"):
            names = {key: gain.MP4_NAMES[key] if fmt == "aac" else key for key in gain.MP4_NAMES}
            assert set(found[fmt]) == set(names.values()), fmt  # the album's: the two tracks', not the source's
            assert float(found[fmt][names[gain.TRACK_GAIN]].removesuffix(" dB")) == pytest.approx(want_gain, abs=0.1)
            assert found[fmt][names[gain.TRACK_GAIN]].endswith(" dB")
            assert float(found[fmt][names[gain.TRACK_PEAK]]) == pytest.approx(want_peak, rel=0.012)  # 0.1 dB
        # RFC 7845: Q7.8 dB relative to -23 LUFS, that is the ReplayGain minus 5 dB.
        assert set(found["opus"]) == {"R128_TRACK_GAIN", "R128_ALBUM_GAIN"}
        assert int(found["opus"]["R128_TRACK_GAIN"]) == pytest.approx((want_gain - 5) * 256, abs=0.1 * 256)


@pytest.mark.slow
def test_keep_copies_the_source_fill_measures_only_what_it_lacks_and_off_writes_none(runs):
    source = {"REPLAYGAIN_TRACK_GAIN": "-1.00 dB", "REPLAYGAIN_TRACK_PEAK": "0.5", "REPLAYGAIN_ALBUM_GAIN": "-2.00 dB"}
    for policy in ("keep", "fill"):
        tagged = gains(runs[policy], "tagged")
        assert tagged["flac"] == tagged["vorbis"] == tagged["mp3"] == source
        assert tagged["opus"] == {"R128_TRACK_GAIN": str(-6 * 256), "R128_ALBUM_GAIN": str(-7 * 256)}
    assert gains(runs["keep"], "plain")["flac"] == {}
    # fill measures the source without gain tags alone; with the other not measured, the folder gets no album gain.
    filled, computed = gains(runs["fill"], "plain"), gains(runs["compute"], "plain")
    assert filled["mp3"] == {k: v for k, v in computed["mp3"].items() if k in (gain.TRACK_GAIN, gain.TRACK_PEAK)}
    assert filled["opus"] == {"R128_TRACK_GAIN": computed["opus"]["R128_TRACK_GAIN"]}
    assert all(not tags for tags in gains(runs["off"], "tagged").values())


def meta(*comments: tuple[str, str]) -> SourceMeta:
    return SourceMeta(AudioInfo(44100, 2, 16, 1.0), 0, comments, ())


def test_with_gain_replaces_only_gain_comments_and_never_writes_an_infinite_gain():
    source = meta(("TITLE", "x"), ("replaygain_album_gain", "-2.00 dB"), ("R128_TRACK_GAIN", "12"))
    measured = Loudness(-6.015, 0.5003288, (1,), (5,))
    assert gain.with_gain(source, ReplayGain.COMPUTE, measured).comments == (
        ("TITLE", "x"),
        ("REPLAYGAIN_TRACK_GAIN", "-11.98 dB"),
        ("REPLAYGAIN_TRACK_PEAK", "0.500329"),
    )
    assert gain.with_gain(source, ReplayGain.FILL, measured) == source  # it has a track gain (R128's)
    album_only = meta(("TITLE", "x"), ("REPLAYGAIN_ALBUM_GAIN", "-2.00 dB"))
    assert gain.with_gain(album_only, ReplayGain.FILL, measured).comments == (
        ("TITLE", "x"),
        ("REPLAYGAIN_TRACK_GAIN", "-11.98 dB"),
        ("REPLAYGAIN_TRACK_PEAK", "0.500329"),
    )
    assert gain.with_gain(source, ReplayGain.OFF, None).comments == (("TITLE", "x"),)
    assert gain.with_gain(source, ReplayGain.KEEP, measured) == source
    assert gain.with_gain(source, ReplayGain.COMPUTE, None) == source  # not measured: the source's stay
    silent = Loudness(None, 0.0)
    assert gain.with_gain(source, ReplayGain.COMPUTE, silent).comments == (("TITLE", "x"),)


def test_a_measurement_travels_with_its_result_to_a_dask_worker_and_back():
    task = Task(Path("/in/a.flac"), "mp3", Path("/out/a.mp3"), Action.ENCODE)
    result = TaskResult(task, Status.SUCCESS, loudness=Loudness(-9.5, 0.9, (3, 7), (1, 2)))
    assert pickle.loads(pickle.dumps(result)) == result


def loudgain_album(paths: list[Path]) -> tuple[float, float]:
    """loudgain -a's (album gain dB, album true peak)."""
    require("loudgain")
    args = ["loudgain", "-q", "-a", "-O", *map(str, paths)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    cells = out.splitlines()[-1].split("\t")
    assert cells[0] == "Album"
    return float(cells[8].split()[0]), float(cells[3])


@pytest.mark.slow
def test_an_album_gets_the_gain_of_all_its_blocks_by_retagging_its_outputs(tmp_path):
    album = tmp_path / "in" / "album"
    album.mkdir(parents=True)
    tracks = []
    for i, effects in enumerate(
        (["pinknoise", "vol", "0.2"], ["sine", "440", "vol", "0.6", "pad", "0.8", "0"], ["pinknoise", "vol", "0.05"])
    ):
        tracks.append(album / f"{i}.flac")
        subprocess.run(
            ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(tracks[-1]), "synth", "1.5", *effects],
            check=True,
        )
    out = tmp_path / "out"
    run = run_flac2all(MODES, "--replaygain", "compute", "-o", out, tmp_path / "in")
    assert run.returncode == 0, run.stdout + run.stderr
    want_gain, want_peak = loudgain_album(tracks)
    values = set()
    for track in tracks:
        found = gains(out, f"album/{track.stem}")
        for fmt in ("flac", "vorbis", "mp3", "aac"):
            name = gain.MP4_NAMES if fmt == "aac" else {k: k for k in gain.MP4_NAMES}
            values.add((found[fmt][name[gain.ALBUM_GAIN]], found[fmt][name[gain.ALBUM_PEAK]]))
        values.add(("opus", found["opus"]["R128_ALBUM_GAIN"]))
    (album_gain, album_peak), (_, r128) = sorted(values, key=lambda v: v[0] == "opus")
    assert len(values) == 2  # the same album values in every output of the folder
    assert float(album_gain.removesuffix(" dB")) == pytest.approx(want_gain, abs=0.1)
    assert float(album_peak) == pytest.approx(want_peak, rel=0.012)
    assert int(r128) == round((float(album_gain.removesuffix(" dB")) - 5) * 256)  # RFC 7845, from the same value
    # The retags were recorded in the state: a re-run has nothing to do.
    again = run_flac2all(MODES, "--replaygain", "compute", "-o", out, tmp_path / "in")
    assert again.returncode == 0
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS (skipped: up to date)"}


def test_opus_gains_in_tags_in_the_header_or_both():
    source = [("TITLE", "x"), ("REPLAYGAIN_TRACK_GAIN", "-6.00 dB"), ("REPLAYGAIN_ALBUM_GAIN", "-8.00 dB")]
    r128 = [("TITLE", "x"), ("R128_TRACK_GAIN", str(-11 * 256)), ("R128_ALBUM_GAIN", str(-13 * 256))]
    assert gain.for_opus(source, r128, OpusGain.R128) == (r128, None)
    assert gain.for_opus(source, r128, OpusGain.BOTH) == (r128 + source[1:], None)
    # The album's gain in the header; what each tag adds on top of it (RFC 7845 5.2.1).
    assert gain.for_opus(source, r128, OpusGain.HEADER) == (
        [("TITLE", "x"), ("R128_TRACK_GAIN", str(2 * 256)), ("R128_ALBUM_GAIN", "0")],
        -13 * 256,
    )
    track_only = r128[:2]
    assert gain.for_opus(source[:2], track_only, OpusGain.HEADER) == (
        [("TITLE", "x"), ("R128_TRACK_GAIN", "0")],
        -11 * 256,
    )
    assert gain.for_opus([("TITLE", "x")], [("TITLE", "x")], OpusGain.HEADER) == ([("TITLE", "x")], None)


def decoded_loudness(opus: Path, tmp_path: Path) -> float:
    """The loudness of what opusdec plays (it applies the header's output gain)."""
    wav = tmp_path / f"{opus.stem}.wav"
    subprocess.run(["opusdec", "--quiet", "--float", str(opus), str(wav)], check=True)
    flac = tmp_path / f"{opus.stem}-decoded.flac"
    subprocess.run(["sox", "-D", str(wav), "-b", "24", str(flac)], check=True)
    return loudgain_track(flac)[0]


@pytest.mark.slow
def test_opusdec_plays_at_the_reference_level_with_the_gain_in_the_header(library, tmp_path):
    require("opusdec")
    plain, header = tmp_path / "plain", tmp_path / "header"
    for outdir, mode in ((plain, "r128"), (header, "header")):
        run = run_flac2all("opus", "--replaygain", "compute", "--opus-gain", mode, "-o", outdir, library)
        assert run.returncode == 0, run.stdout + run.stderr
    for name in ("plain", "tagged"):  # one album: the two are in one folder
        as_tags, in_header = OggOpus(plain / "opus" / f"{name}.opus"), OggOpus(header / "opus" / f"{name}.opus")
        album_q78 = int(as_tags["R128_ALBUM_GAIN"][0])
        head = (header / "opus" / f"{name}.opus").read_bytes()  # one page: 27 bytes, 1 lacing value, OpusHead
        assert head[28:36] == b"OpusHead"
        assert int.from_bytes(head[28 + 16 : 28 + 18], "little", signed=True) == album_q78
        assert int.from_bytes((plain / "opus" / f"{name}.opus").read_bytes()[44:46], "little") == 0
        assert int(in_header["R128_ALBUM_GAIN"][0]) == 0
        assert int(in_header["R128_TRACK_GAIN"][0]) == int(as_tags["R128_TRACK_GAIN"][0]) - album_q78
        # What opusdec plays is louder or quieter by the header's gain: the album at -23 LUFS.
        shift = decoded_loudness(header / "opus" / f"{name}.opus", tmp_path) - decoded_loudness(
            plain / "opus" / f"{name}.opus", tmp_path
        )
        assert shift == pytest.approx(-album_q78 / 256, abs=0.1)  # loudgain's gain: the opposite of loudness


def two_tracks(album: Path) -> Path:
    """A folder of two untagged tracks of different loudness."""
    album.mkdir(parents=True)
    for name, effects in (("1", ["pinknoise", "vol", "0.2"]), ("2", ["sine", "440", "vol", "0.6"])):
        subprocess.run(
            ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(album / f"{name}.flac"), "synth", "1.5"]
            + effects,
            check=True,
        )
    return album


@pytest.mark.slow
def test_a_track_added_to_an_album_is_encoded_alone_and_its_siblings_retagged_with_the_new_album_gain(tmp_path):
    album = two_tracks(tmp_path / "in" / "album")
    out = tmp_path / "out"
    assert run_flac2all("mp3,opus", "--replaygain", "compute", "-o", out, tmp_path / "in").returncode == 0
    before = {p.name: audio_bytes(p) for p in (out / "mp3" / "album").iterdir()}
    subprocess.run(
        ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(album / "3.flac"), "synth", "1", "pinknoise"],
        check=True,
    )
    assert run_flac2all("mp3,opus", "--replaygain", "compute", "-o", out, tmp_path / "in").returncode == 0
    statuses = {Path(row["outfile"]).name: row["conversion_status"] for row in read_log(out)}
    assert statuses == {
        "1.mp3": "SUCCESS (skipped: up to date)",
        "1.opus": "SUCCESS (skipped: up to date)",
        "2.mp3": "SUCCESS (skipped: up to date)",
        "2.opus": "SUCCESS (skipped: up to date)",
        "3.mp3": "SUCCESS",
        "3.opus": "SUCCESS",
    }
    want, _ = loudgain_album(sorted(album.iterdir()))
    for name in ("1", "2", "3"):
        tags = {f.desc: f.text[0] for f in ID3(out / "mp3" / "album" / f"{name}.mp3").getall("TXXX")}
        assert float(tags[gain.ALBUM_GAIN].removesuffix(" dB")) == pytest.approx(want, abs=0.1)
        opus = OggOpus(out / "opus" / "album" / f"{name}.opus")
        assert int(opus["R128_ALBUM_GAIN"][0]) == round((float(tags[gain.ALBUM_GAIN].removesuffix(" dB")) - 5) * 256)
        if f"{name}.mp3" in before:  # retagged, not re-encoded
            assert audio_bytes(out / "mp3" / "album" / f"{name}.mp3") == before[f"{name}.mp3"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.suffix in (".mp3", ".opus")}
    assert run_flac2all("mp3,opus", "--replaygain", "compute", "-o", out, tmp_path / "in").returncode == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing changed: nothing measured, nothing retagged


@pytest.mark.slow
def test_an_output_retagged_for_its_source_s_new_tags_keeps_its_measured_gains(library, tmp_path):
    source = tmp_path / "in" / "plain.flac"
    source.parent.mkdir()
    source.write_bytes((library / "plain.flac").read_bytes())
    out = tmp_path / "out"
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, source.parent).returncode == 0
    measured = {f.desc: f.text[0] for f in ID3(out / "mp3" / "plain.mp3").getall("TXXX") if gain.is_gain_key(f.desc)}
    assert set(measured) == {gain.TRACK_GAIN, gain.TRACK_PEAK, gain.ALBUM_GAIN, gain.ALBUM_PEAK}
    f = FLAC(source)
    f["TITLE"] = "New title"
    f.save()
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, source.parent).returncode == 0
    tags = ID3(out / "mp3" / "plain.mp3")
    assert tags["TIT2"].text == ["New title"]
    assert {f.desc: f.text[0] for f in tags.getall("TXXX") if gain.is_gain_key(f.desc)} == measured


def test_the_test_mode_records_each_file_s_loudness_in_its_analysis(library, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("test", "--replaygain", "compute", "-o", out, library)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("plain", "tagged"):
        want_gain, want_peak = loudgain_track(library / f"{name}.flac")
        last = (out / "test" / f"{name}.ana").read_text().splitlines()[-1]
        fields = dict(word.split("=") for word in last.removeprefix("# loudness: ").replace(" LUFS", "").split()[:3])
        assert float(fields["integrated"]) == pytest.approx(-18 - want_gain, abs=0.1)
        assert float(fields["true_peak"]) == pytest.approx(want_peak, rel=0.012)
    plain = run_flac2all("test", "-o", tmp_path / "plain", library)
    assert plain.returncode == 0
    assert "loudness" not in (tmp_path / "plain" / "test" / "plain.ana").read_text()  # keep: measures nothing


@pytest.mark.slow
def test_an_album_a_stopped_run_left_without_its_gain_gets_it_from_the_next_run(library, tmp_path):
    out = tmp_path / "out"
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, library).returncode == 0
    written = ID3(out / "mp3" / "plain.mp3").getall("TXXX:" + gain.ALBUM_GAIN)[0].text
    # As a run stopped before its album pass leaves it: the tracks measured, no album.
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        db.execute("DELETE FROM albums")
    for name in ("plain", "tagged"):
        tags = ID3(out / "mp3" / f"{name}.mp3")
        tags.delall("TXXX:" + gain.ALBUM_GAIN)
        tags.save()
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, library).returncode == 0
    assert all(row["conversion_status"].startswith("SUCCESS (skipped") for row in read_log(out))  # nothing encoded...
    for name in ("plain", "tagged"):  # ...but the album gain written
        assert ID3(out / "mp3" / f"{name}.mp3").getall("TXXX:" + gain.ALBUM_GAIN)[0].text == written


@pytest.mark.slow
def test_a_moved_source_s_output_keeps_its_gains_without_a_new_measurement(library, tmp_path):
    folder = tmp_path / "in" / "album"
    folder.mkdir(parents=True)
    for name in ("plain", "tagged"):
        (folder / f"{name}.flac").write_bytes((library / f"{name}.flac").read_bytes())
    out = tmp_path / "out"
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, tmp_path / "in").returncode == 0
    before = {
        f.desc: f.text[0] for f in ID3(out / "mp3" / "album" / "plain.mp3").getall("TXXX") if gain.is_gain_key(f.desc)
    }
    (folder / "plain.flac").rename(folder / "renamed.flac")
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, tmp_path / "in").returncode == 0
    statuses = {Path(row["outfile"]).name: row["conversion_status"] for row in read_log(out)}
    assert statuses["renamed.mp3"].startswith("SUCCESS (moved from")
    moved = ID3(out / "mp3" / "album" / "renamed.mp3")
    assert {f.desc: f.text[0] for f in moved.getall("TXXX") if gain.is_gain_key(f.desc)} == before


def header_gain(path: Path) -> int:
    """The OpusHead output gain (Q7.8 dB) of an Opus file laid out as opusenc does."""
    head = path.read_bytes()
    assert head[28:36] == b"OpusHead"
    return int.from_bytes(head[28 + 16 : 28 + 18], "little", signed=True)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["keep", "compute"])
def test_a_new_opus_gain_retags_the_opus_outputs_without_encoding_them_again(library, tmp_path, policy: str):
    out = tmp_path / "out"

    def converted(mode: str) -> dict[str, str]:
        run = run_flac2all("opus,mp3", "--replaygain", policy, "--opus-gain", mode, "-o", out, library)
        assert run.returncode == 0, run.stdout + run.stderr
        return {Path(row["outfile"]).name: row["conversion_status"] for row in read_log(out)}

    converted("r128")
    tagged = out / "opus" / "tagged.opus"
    as_tags = OggOpus(tagged)
    album_q78 = int(as_tags["R128_ALBUM_GAIN"][0])
    assert album_q78 and header_gain(tagged) == 0
    audio = {p.name: audio_bytes(p) for p in (out / "opus").iterdir()}
    statuses = converted("header")
    assert set(statuses.values()) == {"SUCCESS (skipped: up to date)"}  # nothing encoded again
    assert header_gain(tagged) == album_q78
    in_header = OggOpus(tagged)
    assert int(in_header["R128_ALBUM_GAIN"][0]) == 0
    assert int(in_header["R128_TRACK_GAIN"][0]) == int(as_tags["R128_TRACK_GAIN"][0]) - album_q78
    assert {p.name: audio_bytes(p) for p in (out / "opus").iterdir()} == audio
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.opus")}
    converted("header")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the same again: nothing retagged
    converted("r128")  # and back: the header's gain gone, the tags as at first
    assert header_gain(tagged) == 0
    assert int(OggOpus(tagged)["R128_ALBUM_GAIN"][0]) == album_q78


@pytest.mark.slow
def test_under_fill_a_track_added_with_its_own_gain_takes_the_album_gain_off_its_siblings(library, tmp_path):
    album = two_tracks(tmp_path / "in" / "album")
    out = tmp_path / "out"

    def album_gains() -> dict[str, str | None]:
        found = {}
        for name in ("1", "2"):
            tags = {f.desc: f.text[0] for f in ID3(out / "mp3" / "album" / f"{name}.mp3").getall("TXXX")}
            assert gain.TRACK_GAIN in tags
            found[name] = tags.get(gain.ALBUM_GAIN)
        return found

    assert run_flac2all("mp3", "--replaygain", "fill", "-o", out, tmp_path / "in").returncode == 0
    assert all(album_gains().values())
    before = {name: audio_bytes(out / "mp3" / "album" / f"{name}.mp3") for name in ("1", "2")}
    (album / "3.flac").write_bytes((library / "tagged.flac").read_bytes())  # its own gains: not measured
    assert run_flac2all("mp3", "--replaygain", "fill", "-o", out, tmp_path / "in").returncode == 0
    assert album_gains() == {"1": None, "2": None}  # no album gain over tracks some of which are not measured
    assert {name: audio_bytes(out / "mp3" / "album" / f"{name}.mp3") for name in ("1", "2")} == before
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp3")}
    assert run_flac2all("mp3", "--replaygain", "fill", "-o", out, tmp_path / "in").returncode == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_the_album_a_source_moved_out_of_gets_the_gain_of_the_tracks_left(tmp_path):
    album = two_tracks(tmp_path / "in" / "album")
    subprocess.run(
        ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(album / "3.flac"), "synth", "2", "pinknoise"],
        check=True,
    )
    out = tmp_path / "out"
    assert run_flac2all("mp3", "--replaygain", "compute", "-o", out, tmp_path / "in").returncode == 0
    (tmp_path / "in" / "other").mkdir()
    (album / "3.flac").rename(tmp_path / "in" / "other" / "3.flac")
    run = run_flac2all("mp3", "--replaygain", "compute", "-o", out, tmp_path / "in")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (out / "mp3" / "other" / "3.mp3").exists() and not (out / "mp3" / "album" / "3.mp3").exists()
    want, _ = loudgain_album([album / "1.flac", album / "2.flac"])
    for name in ("1", "2"):
        tags = {f.desc: f.text[0] for f in ID3(out / "mp3" / "album" / f"{name}.mp3").getall("TXXX")}
        assert float(tags[gain.ALBUM_GAIN].removesuffix(" dB")) == pytest.approx(want, abs=0.1)
