"""One contract, every codec: encode a real FLAC, decode the output, compare
duration and basic tags (picard's CommonTests idea)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutagen.flac import FLAC

from tests.conftest import (
    BASIC_TAGS,
    decodes,
    duration,
    make_flac,
    mutagen_file,
    read_log,
    run_flac2all,
    source_length,
    stream,
)

# mode -> (folder, extension, tag family)
MODES = {
    "mp3": ("mp3", ".mp3", "id3"),
    "vorbis": ("vorbis", ".ogg", "vorbis"),
    "opus": ("opus", ".opus", "vorbis"),
    "aac": ("aac", ".m4a", "mp4"),
    "flac": ("flac", ".flac", "vorbis"),
    "f:alac": ("f_alac", ".m4a", "mp4"),
    "f:libmp3lame": ("f_libmp3lame", ".mp3", "id3"),
    "f:libopus": ("f_libopus", ".opus", "vorbis"),
    "f:libvorbis": ("f_libvorbis", ".ogg", "vorbis"),
    "f:flac": ("f_flac", ".flac", "vorbis"),
    "f:pcm_s16le": ("f_pcm_s16le", ".wav", None),
    "f:pcm_s24be": ("f_pcm_s24be", ".aiff", None),
    "f:mp2": ("f_mp2", ".mp2", None),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("codecs")
    src = make_flac(root / "in" / "sub" / "song.flac", seconds=0.5, tags=BASIC_TAGS)
    out = root / "out"
    run = run_flac2all(",".join([*MODES, "test"]), "-o", out, root / "in")
    assert run.returncode == 0, run.stdout + run.stderr
    return src, out, run


def basic_tags(path: Path, family: str) -> dict[str, list[str]]:
    """The basic fields read back with mutagen, in a form common to all."""
    f = mutagen_file(path)
    if family == "id3":
        t = f.tags
        return {
            "title": list(t["TIT2"].text),
            "artist": list(t["TPE1"].text),
            "album": list(t["TALB"].text),
            "date": [str(d) for d in t["TDRC"].text],
            "genre": list(t["TCON"].genres),
            "track": list(t["TRCK"].text),
        }
    if family == "mp4":
        t = f.tags
        n, total = t["trkn"][0]
        return {
            "title": t["\xa9nam"],
            "artist": t["\xa9ART"],
            "album": t["\xa9alb"],
            "date": t["\xa9day"],
            "genre": t["\xa9gen"],
            "track": [f"{n}/{total}"],
        }
    t = f.tags
    return {
        "title": t["title"],
        "artist": t["artist"],
        "album": t["album"],
        "date": t["date"],
        "genre": t["genre"],
        "track": [f"{t['tracknumber'][0]}/{t['tracktotal'][0]}"],
    }


EXPECTED = {
    "title": [BASIC_TAGS["TITLE"]],
    "artist": BASIC_TAGS["ARTIST"],
    "album": [BASIC_TAGS["ALBUM"]],
    "date": [BASIC_TAGS["DATE"]],
    "genre": BASIC_TAGS["GENRE"],
    "track": ["3/12"],
}


@pytest.mark.parametrize("mode", MODES)
def test_every_codec_encodes_decodes_and_keeps_length_and_tags(converted, mode):
    src, out, _ = converted
    folder, ext, family = MODES[mode]
    output = out / folder / "sub" / ("song" + ext)
    assert output.is_file()
    assert decodes(output)
    assert duration(output) == pytest.approx(source_length(src), abs=0.08)
    if family is not None:
        assert basic_tags(output, family) == EXPECTED


def test_flac_mode_keeps_the_audio_bit_exact(converted):
    src, out, _ = converted
    assert FLAC(out / "flac" / "sub" / "song.flac").info.md5_signature == FLAC(src).info.md5_signature


def test_test_mode_writes_the_analysis(converted):
    _, out, _ = converted
    ana = out / "test" / "sub" / "song.ana"
    assert "frame=0" in ana.read_text()


def test_every_task_has_a_success_row(converted):
    src, out, _ = converted
    rows = read_log(out)
    assert sorted(r["format"] for r in rows) == sorted([*MODES, "test"])
    for row in rows:
        assert row["conversion_status"] == "SUCCESS"
        assert row["return_code"] == "0"
        assert row["infile"] == str(src)
        assert Path(row["outfile"]).is_file()
        assert float(row["execution_time"]) > 0


SHAPES = [
    # (bits, rate, channels)
    (24, 96000, 2),
    (24, 192000, 2),
    (16, 88200, 2),
    (8, 44100, 1),
    (12, 44100, 2),
    (20, 48000, 2),
    (16, 48000, 6),
    (16, 22050, 2),
    (16, 35467, 2),
    (16, 39000, 1),
    (16, 8000, 1),  # aac pads 1024 samples: 0.13 s at 8 kHz
]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("shapes")
    for bits, rate, channels in SHAPES:
        make_flac(
            root / "in" / f"{bits}b_{rate}_{channels}ch.flac",
            seconds=0.3,
            rate=rate,
            bits=bits,
            channels=channels,
            tags={"TITLE": "x"},
        )
    out = root / "out"
    run = run_flac2all("mp3,vorbis,opus,aac,flac", "-o", out, root / "in")
    return root / "in", out, run


@pytest.mark.slow
def test_every_audio_shape_converts_everywhere(shapes):
    _, _, run = shapes
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(run.rows()) == 5 * len(SHAPES)


@pytest.mark.slow
@pytest.mark.parametrize("bits,rate,channels", SHAPES)
def test_audio_shape_outputs(shapes, bits, rate, channels):
    src_dir, out, _ = shapes
    name = f"{bits}b_{rate}_{channels}ch"
    src = src_dir / f"{name}.flac"
    assert FLAC(src).info.bits_per_sample == bits
    mp3 = out / "mp3" / f"{name}.mp3"
    info = stream(mp3)
    # lame takes at most 48 kHz and 2 channels: adapted, not failed.
    assert int(info["channels"]) == min(channels, 2)
    if rate > 48000:
        assert int(info["sample_rate"]) == (44100 if rate % 44100 == 0 else 48000)
    # vorbis, opus and aac keep every channel.
    for folder, ext in (("vorbis", ".ogg"), ("opus", ".opus"), ("aac", ".m4a")):
        assert int(stream(out / folder / f"{name}{ext}")["channels"]) == channels
    for folder, ext in (("mp3", ".mp3"), ("vorbis", ".ogg"), ("opus", ".opus"), ("aac", ".m4a"), ("flac", ".flac")):
        output = out / folder / f"{name}{ext}"
        assert decodes(output)
        if folder == "mp3" and rate < 16000:
            continue  # ffprobe guesses an MPEG 2.5 mp3's length from its bitrate (0.5 s for 0.3 s)
        assert duration(output) == pytest.approx(source_length(src), abs=0.08)
    flac_out = FLAC(out / "flac" / f"{name}.flac")
    assert flac_out.info.md5_signature == FLAC(src).info.md5_signature
    assert flac_out.info.bits_per_sample == bits
