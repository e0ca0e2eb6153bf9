"""Tag and artwork fidelity: every field and picture of the source reaches
every output, mapped as docs/tags.md says."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from flac2all import tags
from flac2all.model import Action, Settings, Task
from flac2all.running.runner import retag
from tests.conftest import REPO, audio_bytes, make_flac, run_flac2all


def image(tmp: Path, fmt: str, colour: str) -> bytes:
    path = tmp / f"{colour}.{fmt}"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c={colour}:s=64x64",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


def picture(data: bytes, mime: str, kind: int, desc: str) -> Picture:
    pic = Picture()
    pic.data, pic.mime, pic.type, pic.desc = data, mime, kind, desc
    return pic


LYRICS = "First line\nSecond line: with colon\n\nFourth = equals"
FULL = {
    "TITLE": "Ünïcode: title = with ☃",
    "ARTIST": ["Artist One", "Artist Two"],
    "ALBUM": "Album",
    "ALBUMARTIST": "Album Artist",
    "DATE": "2020-05-17",
    "ORIGINALDATE": "1999-01-02",
    "GENRE": ["Rock", "Jazz"],
    "TRACKNUMBER": "3",
    "TRACKTOTAL": "12",
    "DISCNUMBER": "1",
    "DISCTOTAL": "2",
    "COMPILATION": "1",
    "COMPOSER": "Composer",
    "LYRICS": LYRICS,
    "COMMENT": "A comment",
    "ISRC": "GBAYE0601498",
    "LABEL": "Label Records",
    "ARTISTSORT": "One, Artist",
    "ALBUMSORT": "Album, The",
    "ALBUMARTISTSORT": "Artist, Album",
    "TITLESORT": "Title",
    "MOOD": "Happy",
    "DISCSUBTITLE": "Disc subtitle",
    "MUSICBRAINZ_TRACKID": "0a1b2c3d-0000-4000-8000-000000000001",
    "MUSICBRAINZ_ALBUMID": "0a1b2c3d-0000-4000-8000-000000000002",
    "MUSICBRAINZ_ARTISTID": ["0a1b2c3d-0000-4000-8000-000000000003", "0a1b2c3d-0000-4000-8000-000000000004"],
    "MUSICBRAINZ_ALBUMARTISTID": "0a1b2c3d-0000-4000-8000-000000000005",
    "MUSICBRAINZ_RELEASEGROUPID": "0a1b2c3d-0000-4000-8000-000000000006",
    "REPLAYGAIN_TRACK_GAIN": "-6.54 dB",
    "REPLAYGAIN_TRACK_PEAK": "0.988",
    "REPLAYGAIN_ALBUM_GAIN": "-7.00 dB",
    "REPLAYGAIN_ALBUM_PEAK": "0.999",
    "MY_CUSTOM_TAG": "value = with: both",
}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags")
    front = picture(image(root, "jpg", "red"), "image/jpeg", 3, "front")
    back = picture(image(root, "png", "blue"), "image/png", 4, "back")
    src = make_flac(root / "in" / "full.flac", tags=FULL, pictures=[front, back])
    out = root / "out"
    run = run_flac2all("mp3,vorbis,opus,aac,flac", "-o", out, root / "in")
    assert run.returncode == 0, run.stdout + run.stderr
    return src, out, [front, back]


def as_list(value):
    return value if isinstance(value, list) else [value]


def test_mp3_id3v24_fields(full):
    src, out, pics = full
    t = ID3(out / "mp3" / "full.mp3")
    assert t.version == (2, 4, 0)
    text = {
        fid: t[fid].text
        for fid in (
            "TIT2",
            "TPE1",
            "TALB",
            "TPE2",
            "TCON",
            "TRCK",
            "TPOS",
            "TCMP",
            "TCOM",
            "TSRC",
            "TPUB",
            "TSOP",
            "TSOA",
            "TSO2",
            "TSOT",
            "TMOO",
            "TSST",
        )
    }
    assert text == {
        "TIT2": [FULL["TITLE"]],
        "TPE1": FULL["ARTIST"],
        "TALB": ["Album"],
        "TPE2": ["Album Artist"],
        "TCON": ["Rock", "Jazz"],
        "TRCK": ["3/12"],
        "TPOS": ["1/2"],
        "TCMP": ["1"],
        "TCOM": ["Composer"],
        "TSRC": ["GBAYE0601498"],
        "TPUB": ["Label Records"],
        "TSOP": ["One, Artist"],
        "TSOA": ["Album, The"],
        "TSO2": ["Artist, Album"],
        "TSOT": ["Title"],
        "TMOO": ["Happy"],
        "TSST": ["Disc subtitle"],
    }
    assert str(t["TDRC"].text[0]) == "2020-05-17"
    assert str(t["TDOR"].text[0]) == "1999-01-02"
    assert t.getall("USLT")[0].text == LYRICS
    assert t.getall("COMM")[0].text == ["A comment"]
    assert t["UFID:http://musicbrainz.org"].data == FULL["MUSICBRAINZ_TRACKID"].encode()
    txxx = {f.desc: f.text for f in t.getall("TXXX")}
    check_provenance(txxx.pop("FLAC2ALL_SOURCE"), src)
    assert txxx == {
        "MusicBrainz Album Id": [FULL["MUSICBRAINZ_ALBUMID"]],
        "MusicBrainz Artist Id": FULL["MUSICBRAINZ_ARTISTID"],
        "MusicBrainz Album Artist Id": [FULL["MUSICBRAINZ_ALBUMARTISTID"]],
        "MusicBrainz Release Group Id": [FULL["MUSICBRAINZ_RELEASEGROUPID"]],
        "REPLAYGAIN_TRACK_GAIN": ["-6.54 dB"],
        "REPLAYGAIN_TRACK_PEAK": ["0.988"],
        "REPLAYGAIN_ALBUM_GAIN": ["-7.00 dB"],
        "REPLAYGAIN_ALBUM_PEAK": ["0.999"],
        "MY_CUSTOM_TAG": ["value = with: both"],
    }
    apic = t.getall("APIC")
    assert [(a.type, a.mime, a.desc, a.data) for a in apic] == [(p.type, p.mime, p.desc, p.data) for p in pics]
    # Nothing else: no advert, no invented genre, no encoder frames.
    assert sorted({f.FrameID for f in t.values()}) == sorted(
        {*text, "TDRC", "TDOR", "USLT", "COMM", "UFID", "TXXX", "APIC"}
    )


def test_m4a_atoms(full):
    src, out, pics = full
    t = MP4(out / "aac" / "full.m4a").tags
    assert t["\xa9nam"] == [FULL["TITLE"]]
    assert t["\xa9ART"] == FULL["ARTIST"]
    assert t["\xa9alb"] == ["Album"] and t["aART"] == ["Album Artist"]
    assert t["trkn"] == [(3, 12)] and t["disk"] == [(1, 2)]
    assert t["\xa9day"] == ["2020-05-17"] and t["\xa9gen"] == ["Rock", "Jazz"] and t["\xa9wrt"] == ["Composer"]
    assert t["\xa9lyr"] == [LYRICS] and t["\xa9cmt"] == ["A comment"] and t["cpil"] is True
    assert t["soar"] == ["One, Artist"] and t["soal"] == ["Album, The"] and t["soaa"] == ["Artist, Album"]
    freeform = {k.split(":", 2)[2]: [bytes(v).decode() for v in vals] for k, vals in t.items() if k.startswith("----")}
    check_provenance(freeform.pop("FLAC2ALL_SOURCE"), src)
    assert freeform == {
        "MusicBrainz Track Id": [FULL["MUSICBRAINZ_TRACKID"]],
        "MusicBrainz Album Id": [FULL["MUSICBRAINZ_ALBUMID"]],
        "MusicBrainz Artist Id": FULL["MUSICBRAINZ_ARTISTID"],
        "MusicBrainz Album Artist Id": [FULL["MUSICBRAINZ_ALBUMARTISTID"]],
        "MusicBrainz Release Group Id": [FULL["MUSICBRAINZ_RELEASEGROUPID"]],
        "ISRC": ["GBAYE0601498"],
        "LABEL": ["Label Records"],
        "ORIGINALDATE": ["1999-01-02"],
        "MOOD": ["Happy"],
        "DISCSUBTITLE": ["Disc subtitle"],
        # Lower case, as Picard and foobar2000 name them in MP4.
        "replaygain_track_gain": ["-6.54 dB"],
        "replaygain_track_peak": ["0.988"],
        "replaygain_album_gain": ["-7.00 dB"],
        "replaygain_album_peak": ["0.999"],
        "MY_CUSTOM_TAG": ["value = with: both"],
    }
    covers = t["covr"]
    assert [bytes(c) for c in covers] == [p.data for p in pics]
    assert [c.imageformat for c in covers] == [MP4Cover.FORMAT_JPEG, MP4Cover.FORMAT_PNG]
    assert "\xa9too" not in t  # what ffmpeg wrote on its own is gone


PROVENANCE = re.compile(r"v1 md5=([0-9a-f]{32}) settings=[0-9a-f]{16} tags=([0-9a-f]{32}) pictures=([0-9a-f]{32})")


def check_provenance(values: list[str], src: Path) -> None:
    """The FLAC2ALL_SOURCE tag every output carries (the mirror state is
    rebuilt from it): the source's audio MD5 and tags and pictures hashes."""
    assert len(values) == 1
    m = PROVENANCE.fullmatch(values[0])
    assert m, values
    f = FLAC(src)
    assert m.groups() == (f"{f.info.md5_signature:032x}", tags.tags_hash(list(f.tags)), tags.pictures_hash(f.pictures))


def source_pairs(src: Path) -> list[tuple[str, str]]:
    return list(FLAC(src).tags)


@pytest.mark.parametrize("folder,name,cls", [("vorbis", "full.ogg", OggVorbis), ("flac", "full.flac", FLAC)])
def test_vorbis_comments_verbatim(full, folder, name, cls):
    src, out, pics = full
    f = cls(out / folder / name)
    pairs = [(k, v) for k, v in f.tags if k != "METADATA_BLOCK_PICTURE"]
    # Every comment, in order, nothing added (no ENCODER=) but the provenance.
    assert pairs[:-1] == source_pairs(src)
    assert pairs[-1][0] == "FLAC2ALL_SOURCE"
    check_provenance([pairs[-1][1]], src)
    if cls is FLAC:
        got = f.pictures
    else:
        got = [Picture(base64.b64decode(v)) for v in f.tags["METADATA_BLOCK_PICTURE"]]
    assert [(p.type, p.mime, p.desc, p.data) for p in got] == [(p.type, p.mime, p.desc, p.data) for p in pics]


def test_opus_gets_r128_not_replaygain(full):
    src, out, pics = full
    f = OggOpus(out / "opus" / "full.opus")
    keys = [k.upper() for k, _ in f.tags]
    assert not any(k.startswith("REPLAYGAIN_") for k in keys)
    # (-6.54 - 5) * 256 = -2954.24 ; (-7.00 - 5) * 256 = -3072
    assert f.tags["R128_TRACK_GAIN"] == ["-2954"]
    assert f.tags["R128_ALBUM_GAIN"] == ["-3072"]
    expected = [(k, v) for k, v in source_pairs(src) if not k.upper().startswith("REPLAYGAIN_")]
    check_provenance(f.tags["FLAC2ALL_SOURCE"], src)
    rest = [(k, v) for k, v in f.tags if not k.startswith(("R128_", "METADATA_BLOCK_PICTURE", "FLAC2ALL_"))]
    assert rest == expected
    # The header's output gain stays 0: players apply R128 gain themselves.
    with open(out / "opus" / "full.opus", "rb") as fh:
        head = fh.read(200)
    i = head.index(b"OpusHead")
    assert int.from_bytes(head[i + 16 : i + 18], "little", signed=True) == 0
    got = [Picture(base64.b64decode(v)) for v in f.tags["METADATA_BLOCK_PICTURE"]]
    assert [p.data for p in got] == [p.data for p in pics]


def test_id3v23(tmp_path, full):
    src, _, _ = full
    out = tmp_path / "out"
    run = run_flac2all("mp3", "--id3v2.3", "-o", out, src.parent)
    assert run.returncode == 0
    t = ID3(out / "mp3" / "full.mp3", translate=False)  # the frames as stored
    assert t.version == (2, 3, 0)
    assert t["TPE1"].text == ["Artist One/Artist Two"]
    assert t["TCON"].text == ["Rock/Jazz"]
    assert t["TYER"].text == ["2020"] and t["TDAT"].text == ["1705"]
    assert t["TORY"].text == ["1999"]
    txxx = {f.desc: f.text for f in t.getall("TXXX")}
    assert txxx["ORIGINALDATE"] == ["1999-01-02"]
    assert txxx["MOOD"] == ["Happy"] and txxx["DISCSUBTITLE"] == ["Disc subtitle"]
    assert t["TSOP"].text == ["One, Artist"]
    assert "TDRC" not in t and "TMOO" not in t


@pytest.mark.slow
def test_sources_without_tags_only_a_picture_and_1000_comments(tmp_path):
    root = tmp_path / "in"
    make_flac(root / "bare.flac")
    art = image(tmp_path, "jpg", "green")
    make_flac(root / "pic.flac", pictures=[picture(art, "image/jpeg", 3, "")])
    many = {f"FIELD{i:04d}": f"value {i}" for i in range(1000)}
    big_art = art + bytes(3 * 1024 * 1024)  # a multi-megabyte picture
    make_flac(root / "many.flac", tags=many, pictures=[picture(big_art, "image/jpeg", 3, "big")])
    out = tmp_path / "out"
    run = run_flac2all("mp3,vorbis,opus,aac,flac", "-o", out, root)
    assert run.returncode == 0, run.stdout + run.stderr
    # No tags at all: nothing invented (but the provenance).
    assert list(ID3(out / "mp3" / "bare.mp3").keys()) == ["TXXX:FLAC2ALL_SOURCE"]
    assert [k for k, _ in OggVorbis(out / "vorbis" / "bare.ogg").tags] == ["FLAC2ALL_SOURCE"]
    assert list(MP4(out / "aac" / "bare.m4a").tags.keys()) == ["----:com.apple.iTunes:FLAC2ALL_SOURCE"]
    # Only a picture.
    assert [a.data for a in ID3(out / "mp3" / "pic.mp3").getall("APIC")] == [art]
    assert [bytes(c) for c in MP4(out / "aac" / "pic.m4a").tags["covr"]] == [art]
    # 1000 comments and a 3 MB picture.
    assert len([f for f in ID3(out / "mp3" / "many.mp3").getall("TXXX") if f.desc.startswith("FIELD")]) == 1000
    assert len([k for k in OggOpus(out / "opus" / "many.opus").tags.keys() if k.upper().startswith("FIELD")]) == 1000
    flac = FLAC(out / "flac" / "many.flac")
    assert len([k for k, _ in flac.tags if k.startswith("FIELD")]) == 1000 and flac.pictures[0].data == big_art
    assert (
        Picture(base64.b64decode(OggVorbis(out / "vorbis" / "many.ogg")["METADATA_BLOCK_PICTURE"][0])).data == big_art
    )


@pytest.mark.slow
def test_folder_art_embedded_only_when_asked_and_missing(tmp_path):
    root = tmp_path / "in"
    make_flac(root / "a" / "song.flac")
    own = image(tmp_path, "png", "white")
    make_flac(root / "b" / "has.flac", pictures=[picture(own, "image/png", 3, "own")])
    cover = image(tmp_path, "jpg", "yellow")
    (root / "a" / "Cover.JPG").write_bytes(cover)
    (root / "b" / "folder.jpg").write_bytes(cover)
    plain = run_flac2all("mp3", "-o", tmp_path / "plain", root)
    assert ID3(tmp_path / "plain" / "mp3" / "a" / "song.mp3").getall("APIC") == []
    run = run_flac2all("mp3,opus", "--embed-folder-art", "-o", tmp_path / "out", root)
    assert plain.returncode == run.returncode == 0
    apic = ID3(tmp_path / "out" / "mp3" / "a" / "song.mp3").getall("APIC")
    assert [(a.type, a.mime, a.data) for a in apic] == [(3, "image/jpeg", cover)]
    assert [a.data for a in ID3(tmp_path / "out" / "mp3" / "b" / "has.mp3").getall("APIC")] == [own]


@pytest.mark.slow
def test_retag_rewrites_tags_in_place_without_reencoding(tmp_path):
    src = make_flac(tmp_path / "in" / "s.flac", tags={"TITLE": "Old", "ARTIST": "A"})
    out = tmp_path / "out"
    assert run_flac2all("mp3,opus", "-o", out, src.parent).returncode == 0
    f = FLAC(src)
    f["TITLE"] = "New"
    f.save()
    settings = Settings(input_dir=src.parent, outdir=out, modes=("mp3", "opus"))
    for mode, ext in (("mp3", ".mp3"), ("opus", ".opus")):
        output = out / mode / f"s{ext}"
        audio_before = audio_bytes(output)
        retag(Task(src, mode, output, Action.ENCODE), settings)
        assert audio_bytes(output) == audio_before
    assert ID3(out / "mp3" / "s.mp3")["TIT2"].text == ["New"]
    assert OggOpus(out / "opus" / "s.opus")["TITLE"] == ["New"]
    assert not [p for p in out.rglob(".flac2all-tmp-*")]


def test_docs_tags_md_matches_the_tables():
    """docs/tags.md is what scripts/tags_doc.py writes from the tables."""
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tags_doc.py")], capture_output=True, text=True, check=True
    )
    assert "| TITLE | TIT2 | ©nam |" in made.stdout
    assert (REPO / "docs" / "tags.md").read_text() == made.stdout


@pytest.mark.slow
def test_picture_mp4_cannot_hold_is_skipped_with_a_warning(tmp_path):
    gif = tmp_path / "x.gif"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", str(gif)],
        check=True,
    )
    jpg = image(tmp_path, "jpg", "black")
    src = make_flac(
        tmp_path / "in" / "g.flac",
        pictures=[picture(gif.read_bytes(), "image/gif", 3, "anim"), picture(jpg, "image/jpeg", 4, "back")],
    )
    out = tmp_path / "out"
    run = run_flac2all("aac,mp3", "-o", out, src.parent)
    assert run.returncode == 0
    row = next(r for r in run.rows() if r["format"] == "aac")
    assert row["conversion_status"] == "SUCCESS (picture 'anim' (image/gif) skipped: MP4 takes only JPEG and PNG)"
    assert "image/gif" in run.stderr
    assert [bytes(c) for c in MP4(out / "aac" / "g.m4a").tags["covr"]] == [jpg]
    assert len(ID3(out / "mp3" / "g.mp3").getall("APIC")) == 2  # ID3 takes any image type
