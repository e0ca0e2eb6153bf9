"""The CUE sheet parser: text, encodings, the FLAC's own CUESHEET block, and
the tracks as sample ranges."""

from __future__ import annotations

import os
from pathlib import PurePath

import pytest
from mutagen.flac import FLAC, CueSheet, CueSheetTrack, CueSheetTrackIndex

from flac2all.planning import cue
from flac2all.planning.cue import CueError
from tests.conftest import make_flac

ALBUM = """\ufeffREM GENRE "Прог-рок"
REM DATE 1999
REM COMMENT "ExactAudioCopy v1.6"
CATALOG 0123456789012
PERFORMER "Группа"
TITLE "Альбом"
FILE "album.wav" WAVE
  TRACK 01 AUDIO
    TITLE "Первая"
    FLAGS DCP
    INDEX 01 00:00:00
  TRACK 02 AUDIO
    TITLE "Second"
    PERFORMER "Guest"
    SONGWRITER "Writer"
    ISRC GBAYE0000001
    INDEX 00 00:01:00
    INDEX 01 00:01:30
  TRACK 03 AUDIO
    TITLE "Third"
    INDEX 01 00:02:74
"""


def test_text_sheet_tags_and_sample_exact_bounds():
    sheet = cue.parse_file(ALBUM.encode(), "album.cue")
    assert sheet.file == "album.wav"
    splits = sheet.split(total=44100 * 4, rate=44100)
    # Pregap (INDEX 00..01 of track 2) ends track 1; frames are 588 samples at 44.1 kHz.
    assert [(s.start, s.end) for s in splits] == [
        (0, 44100 + 30 * 588),
        (44100 + 30 * 588, 88200 + 74 * 588),
        (88200 + 74 * 588, 176400),
    ]
    first, second, third = (dict(s.tags) for s in splits)
    assert first == {
        "GENRE": "Прог-рок",
        "DATE": "1999",
        "COMMENT": "ExactAudioCopy v1.6",
        "CATALOGNUMBER": "0123456789012",
        "ALBUMARTIST": "Группа",
        "ALBUM": "Альбом",
        "ARTIST": "Группа",
        "TITLE": "Первая",
        "TRACKNUMBER": "1",
        "TRACKTOTAL": "3",
    }
    assert second["ARTIST"] == "Guest" and second["COMPOSER"] == "Writer" and second["ISRC"] == "GBAYE0000001"
    assert third["TITLE"] == "Third" and third["TRACKNUMBER"] == "3"


def test_pregap_to_its_own_track_on_request():
    splits = cue.parse_text(ALBUM).split(total=44100 * 4, rate=44100, pregap=cue.NEXT)
    assert splits[0].end == splits[1].start == 44100


def test_rates_other_than_cd():
    splits = cue.parse_text(ALBUM).split(total=96000 * 4, rate=96000)
    assert splits[1].start == 96000 + 30 * 1280


def test_cp1251_is_refused_with_a_way_out_then_read_when_named():
    data = ALBUM.lstrip("\ufeff").encode("cp1251")
    with pytest.raises(CueError, match=r"CUE album.cue is not UTF-8; convert it or use --cue-encoding cp1251"):
        cue.parse_file(data, "album.cue")
    sheet = cue.parse_file(data, "album.cue", "cp1251")
    assert dict(sheet.album)["ALBUM"] == "Альбом"


def test_shift_jis_and_utf16():
    text = 'TITLE "アルバム"\nFILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n'
    assert dict(cue.parse_file(text.encode("shift_jis"), "a.cue", "shift_jis").album)["ALBUM"] == "アルバム"
    assert dict(cue.parse_file(text.encode("utf-16"), "a.cue").album)["ALBUM"] == "アルバム"


@pytest.mark.parametrize(
    ("text", "total", "reason"),
    [
        (
            'FILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\nTRACK 02 AUDIO\nINDEX 01 00:05:00\n',
            44100 * 4,
            "past the end",
        ),
        (
            'FILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:02:00\nTRACK 02 AUDIO\nINDEX 01 00:01:00\n',
            44100 * 4,
            "before the track before",
        ),
        (
            'FILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n'
            "TRACK 02 AUDIO\nINDEX 01 00:01:00\nINDEX 00 00:02:00\n",
            44100 * 4,
            "INDEX 00 is after",
        ),
        ('FILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 00 00:00:00\n', 44100, "no INDEX 01"),
        ('FILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:61:00\n', 44100, "not a time"),
    ],
)
def test_broken_sheets_say_why(text, total, reason):
    with pytest.raises(CueError, match=reason):
        cue.parse_text(text).split(total, 44100)


def test_several_files_refused_unless_the_same():
    same = (
        'FILE "a.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\nFILE "a.flac" WAVE\nTRACK 02 AUDIO\nINDEX 01 00:01:00\n'
    )
    assert len(cue.parse_text(same).tracks) == 2
    with pytest.raises(CueError, match="names 2 files"):
        cue.parse_text(same.replace('"a.flac" WAVE\nTRACK 02', '"b.flac" WAVE\nTRACK 02'))


def test_the_file_it_names():
    sheet = cue.parse_text('FILE "C:\\rips\\Album Name.wav" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n')
    assert sheet.names(PurePath("x/Album Name.flac"))
    assert not sheet.names(PurePath("x/Other.flac"))
    unquoted = cue.parse_text("FILE Album Name.flac WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n")
    assert unquoted.file == "Album Name.flac"


def test_embedded_cuesheet_block(tmp_path):
    path = make_flac(tmp_path / "disc.flac", seconds=2.0)
    flac = FLAC(path)
    block = CueSheet(None)
    block.media_catalog_number = b"1234567890123"
    for number, start, pregap in ((1, 0, 0), (2, 30000, 1000), (3, 60000, 0)):
        track = CueSheetTrack(number, start, b"GBAYE0000002" if number == 2 else b"")
        if pregap:
            track.indexes.append(CueSheetTrackIndex(0, 0))
        track.indexes.append(CueSheetTrackIndex(1, pregap))
        block.tracks.append(track)
    block.tracks.append(CueSheetTrack(170, 88200))
    flac.metadata_blocks.append(block)
    flac.save()
    flac = FLAC(path)
    read = next(b for b in flac.metadata_blocks if isinstance(b, CueSheet))
    sheet = cue.parse_block(read, 44100)
    splits = sheet.split(flac.info.total_samples, 44100)
    assert [(s.start, s.end) for s in splits] == [(0, 31000), (31000, 60000), (60000, 88200)]
    assert dict(splits[1].tags)["ISRC"] == "GBAYE0000002"
    assert dict(splits[0].tags)["CATALOGNUMBER"] == "1234567890123"


def test_read_tracks_prefers_the_cue_beside_then_the_comment(tmp_path):
    path = make_flac(tmp_path / "Disc.flac", seconds=2.0)
    assert cue.read_tracks(path, None) is None  # no sheet: converted whole
    flac = FLAC(path)
    flac["CUESHEET"] = (
        'FILE "Disc.flac" WAVE\nTRACK 01 AUDIO\nTITLE "A"\nINDEX 01 00:00:00\n'
        'TRACK 02 AUDIO\nTITLE "B"\nINDEX 01 00:01:00\n'
    )
    flac.save()
    tracks = cue.read_tracks(path, None)
    assert [(t.start, t.end, dict(t.tags)["TITLE"]) for t in tracks] == [(0, 44100, "A"), (44100, 88200, "B")]
    beside = tmp_path / "Disc.cue"
    beside.write_text('FILE "Disc.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\nTRACK 02 AUDIO\nINDEX 01 00:00:30\n')
    assert [t.start for t in cue.read_tracks(path, beside)] == [0, 30 * 588]
    beside.write_text('FILE "Elsewhere.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n')
    with pytest.raises(CueError, match="CUE Disc.cue names Elsewhere.flac, not Disc.flac"):
        cue.read_tracks(path, beside)


def test_read_tracks_never_reads_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.flac"
    os.mkfifo(fifo)
    assert cue.read_tracks(fifo, None) is None
    path = make_flac(tmp_path / "Disc.flac")
    sheet = tmp_path / "Disc.cue"
    os.mkfifo(sheet)
    with pytest.raises(CueError, match="not a regular file"):
        cue.read_tracks(path, sheet)


def test_read_tracks_finds_a_sheet_wherever_the_flac_keeps_it(tmp_path):
    """The quick look that spares a FLAC without a sheet its full parse
    never misses one: a comment named in any case, a CUESHEET block, a
    stream after an ID3v2 tag."""
    text = 'FILE "x.flac" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\nTRACK 02 AUDIO\nINDEX 01 00:01:00\n'
    plain = make_flac(tmp_path / "plain.flac", seconds=2.0)
    with open(plain, "rb") as f:
        assert cue.sheetless(f)
    assert cue.read_tracks(plain, None) is None
    lower = make_flac(tmp_path / "lower.flac", seconds=2.0)
    flac = FLAC(lower)
    flac["cueSheet"] = text
    flac.save()
    assert [t.start for t in cue.read_tracks(lower, None)] == [0, 44100]
    block = make_flac(tmp_path / "block.flac", seconds=2.0)
    flac = FLAC(block)
    sheet = CueSheet(None)
    for number, start in ((1, 0), (2, 44100), (170, 88200)):
        sheet.tracks.append(CueSheetTrack(number, start))
        if number != 170:
            sheet.tracks[-1].indexes.append(CueSheetTrackIndex(1, 0))
    flac.metadata_blocks.append(sheet)
    flac.save()
    assert [(t.start, t.end) for t in cue.read_tracks(block, None)] == [(0, 44100), (44100, 88200)]
    tagged = tmp_path / "tagged.flac"
    tagged.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + lower.read_bytes())
    with open(tagged, "rb") as f:
        assert not cue.sheetless(f)
    assert [t.start for t in cue.read_tracks(tagged, None)] == [0, 44100]
