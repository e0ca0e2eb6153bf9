"""Device profiles end to end, through the real encoders: FAT32 names
(unsafe characters, reserved names, long names, names that clash once
spelled), lossy files copied or converted, covers scaled, playlists
rewritten; a second run doing nothing; a changed folder cover noticed; the
FAT32 tree written onto a real vfat file system."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from mutagen.flac import Picture
from mutagen.id3 import ID3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from pathvalidate import is_valid_filename
from PIL import Image

from flac2all.planning.names import units
from tests.conftest import decodes, make_flac, read_log, require, run_flac2all

BIG = 3000


def jpeg(width: int, height: int) -> bytes:
    """A real JPEG (a gradient: small, quick to make)."""
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def front_cover(data: bytes) -> Picture:
    pic = Picture()
    pic.type, pic.mime, pic.desc, pic.data = 3, "image/jpeg", "", data
    return pic


def lossy_files(folder: Path, tmp_path: Path) -> None:
    """bought.mp3 (lame, 320 kbit/s) and store.m4a (ffmpeg's aac), tagged."""
    wav = tmp_path / "tone.wav"
    subprocess.run(["sox", "-V1", "-n", "-r", "44100", "-c", "2", str(wav), "synth", "0.3", "sine", "440"], check=True)
    mp3 = ["lame", "--quiet", "-b", "320", "--tt", "Bought mp3", str(wav), str(folder / "bought.mp3")]
    subprocess.run(mp3, check=True)
    m4a = ["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "96k", "-metadata", "title=Bought m4a"]
    subprocess.run([*m4a, str(folder / "store.m4a")], check=True)


LONG = "x" * 245  # with ".flac": 250 bytes; its output names need cutting once numbered or in a deep folder
ACCENTS = "é" * 120  # 240 bytes, 120 UTF-16 units


@pytest.fixture
def device_lib(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    cover = front_cover(jpeg(BIG, BIG))
    acdc = root / "AC" / "DC"
    make_flac(acdc / '01 Track: "1"?.flac', seconds=0.15, tags={"TITLE": "colon"}, pictures=[cover])
    make_flac(acdc / "01 Track_ _1__.flac", seconds=0.15, tags={"TITLE": "underscores"})  # the same, spelled
    album = root / "Album."  # a trailing dot
    make_flac(album / "CON.flac", seconds=0.15, tags={"TITLE": "reserved"})
    make_flac(album / "Trailing..flac", seconds=0.15)
    make_flac(album / f"{LONG}.flac", seconds=0.15)
    make_flac(album / f"{LONG}?.flac", seconds=0.15)  # clashes with the one above once cut and spelled
    make_flac(album / f"{ACCENTS}.flac", seconds=0.15)
    make_flac(root / "Case" / "Song.flac", seconds=0.15)
    make_flac(root / "Case" / "song.flac", seconds=0.15)  # one name on FAT32
    (album / "cover.jpg").write_bytes(jpeg(BIG, BIG))
    lossy_files(album, tmp_path)
    (album / "list.m3u8").write_text(
        "#EXTM3U\n"
        "#EXTINF:1,reserved\nCON.flac\n"
        f"#EXTINF:1,bought\n{album / 'bought.mp3'}\n"
        '../AC/DC/01 Track: "1"?.flac\n'
        "#EXTINF:1,gone\nmissing.flac\n"
        "http://radio.invalid/stream\n"
    )
    return root


def outputs(out: Path) -> list[Path]:
    return sorted(
        p.relative_to(out)
        for p in out.rglob("*")
        if p.is_file() and ".flac2all" not in p.parts and p.name != "conversion_results.log"
    )


def assert_fat32_names(out: Path, max_path: int = 255) -> None:
    rels = outputs(out)
    for rel in rels:
        for part in rel.parts:
            assert is_valid_filename(part, platform="windows"), rel
            assert units(part) <= 255 and len(os.fsencode(part)) <= 255, rel
        assert units(rel.as_posix()) <= max_path, rel
    folded = {str(rel).casefold() for rel in rels}
    assert len(folded) == len(rels)  # no two names the same to a FAT32 driver


def picture_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


PROFILE = ("--names", "fat32", "--lossy", "copy", "--art-max-size", "500", "--playlists", "-c", "--embed-folder-art")


def run(lib: Path, out: Path, spy, *args: str):
    folder, log = spy
    log.write_text("")
    result = run_flac2all("mp3,opus", "-o", out, *args, lib, path_prefix=folder)
    return result, log.read_text().splitlines()


def test_a_fat32_profile_end_to_end(device_lib, tmp_path, spy):
    out = tmp_path / "out"
    first, _ = run(device_lib, out, spy, *PROFILE)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_fat32_names(out)
    mp3 = out / "mp3"
    names = {p.name for p in (mp3 / "AC" / "DC").iterdir()}
    assert names == {"01 Track_ _1__.mp3", "01 Track_ _1__ (2).mp3"}  # two sources, two outputs
    assert {"CON_.mp3", "Trailing..mp3", "bought.mp3", "store.m4a", "cover.jpg"} <= {
        p.name for p in (mp3 / "Album").iterdir()
    }
    assert {p.name.casefold() for p in (mp3 / "Case").iterdir()} == {"song.mp3", "song (2).mp3"}
    long_ones = [p for p in (mp3 / "Album").iterdir() if p.name.startswith("xxx")]
    assert len(long_ones) == 2 and all(decodes(p) for p in long_ones)
    assert len(list((out / "opus").rglob("*.opus"))) == 9 and len(list(mp3.rglob("*.mp3"))) == 10
    # Lossy files copied as they are, into every mode's tree.
    for mode in ("mp3", "opus"):
        for name in ("bought.mp3", "store.m4a"):
            assert (out / mode / "Album" / name).read_bytes() == (device_lib / "Album." / name).read_bytes()
    # Covers: the embedded one and cover.jpg scaled to 500 pixels, JPEG.
    apic = ID3(mp3 / "AC" / "DC" / "01 Track_ _1__.mp3").getall("APIC")[0]
    assert apic.mime == "image/jpeg" and picture_size(apic.data) == (500, 500)
    opus_pic = OggOpus(out / "opus" / "AC" / "DC" / "01 Track_ _1__.opus")["metadata_block_picture"][0]
    assert (Picture(__import__("base64").b64decode(opus_pic)).width) == 500
    assert picture_size((mp3 / "Album" / "cover.jpg").read_bytes()) == (500, 500)
    folder_art = ID3(mp3 / "Album" / "CON_.mp3").getall("APIC")[0]  # --embed-folder-art, scaled too
    assert picture_size(folder_art.data) == (500, 500)
    # The playlist points at outputs that exist, relatively; the missing entry is gone with its #EXTINF.
    lines = (mp3 / "Album" / "list.m3u8").read_text().splitlines()
    assert lines == [
        "#EXTM3U",
        "#EXTINF:1,reserved",
        "CON_.mp3",
        "#EXTINF:1,bought",
        "bought.mp3",
        "../AC/DC/01 Track_ _1__.mp3",
        "http://radio.invalid/stream",
    ]
    opus_lines = (out / "opus" / "Album" / "list.m3u8").read_text().splitlines()
    for line in [*lines, *opus_lines]:
        if not line.startswith("#") and "://" not in line:
            assert (
                not Path(line).is_absolute()
                and (mp3 / "Album" / line).exists()
                or (out / "opus" / "Album" / line).exists()
            )
    assert "bought.mp3" in opus_lines  # an mp3 copied into the opus tree stays an mp3
    assert "entry missing.flac dropped" in first.stderr
    # A second run does nothing: no process, no file touched, no warning again.
    before = {p: (out / p).stat().st_mtime_ns for p in outputs(out)}
    second, started = run(device_lib, out, spy, *PROFILE)
    assert second.returncode == 0 and started == []
    assert {r["conversion_status"] for r in second.rows()} == {"SUCCESS (skipped: up to date)"}
    assert {p: (out / p).stat().st_mtime_ns for p in outputs(out)} == before
    assert "dropped" not in second.stderr
    # A state of schema 1 knew no covers: the next run records them, retagging nothing.
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        db.execute("UPDATE outputs SET art = ''")
    upgraded, started = run(device_lib, out, spy, *PROFILE)
    assert started == [] and {r["conversion_status"] for r in upgraded.rows()} == {"SUCCESS (skipped: up to date)"}
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        arts = {os.fsdecode(o): a for o, a in db.execute("SELECT output, art FROM outputs WHERE mode = 'mp3'")}
    assert arts["mp3/Album/CON_.mp3"].startswith("cover.jpg:") and arts["mp3/Case/Song.mp3"] == "-"
    # A new cover.jpg alone is noticed: the album's outputs retagged, its copy scaled again.
    (device_lib / "Album." / "cover.jpg").write_bytes(jpeg(1200, 600))
    third, started = run(device_lib, out, spy, *PROFILE)
    acts = {(Path(r["outfile"]).name, r["format"]): r["conversion_status"] for r in third.rows()}
    assert acts[("CON_.mp3", "mp3")] == acts[("CON_.opus", "opus")] == "SUCCESS (retagged)"
    assert acts[("cover.jpg", "mp3")] == "SUCCESS (scaled to 500x250)" and started == []
    assert picture_size(ID3(mp3 / "Album" / "CON_.mp3").getall("APIC")[0].data) == (500, 250)
    assert acts[("01 Track_ _1__.mp3", "mp3")] == "SUCCESS (skipped: up to date)"


def test_names_stay_as_the_state_recorded_them(device_lib, tmp_path, spy):
    out = tmp_path / "out"
    args = ("--names", "fat32")
    assert run(device_lib, out, spy, *args)[0].returncode == 0
    colon = out / "mp3" / "AC" / "DC" / "01 Track_ _1__.mp3"
    numbered = out / "mp3" / "AC" / "DC" / "01 Track_ _1__ (2).mp3"
    made_from = {p: ID3(p)["TIT2"].text[0] for p in (colon, numbered)}
    assert made_from == {colon: "colon", numbered: "underscores"}
    # A new source that sorts first and spells the same takes neither name.
    make_flac(device_lib / "AC" / "DC" / '01 Track" _1__.flac', seconds=0.15, tags={"TITLE": "star"})
    again, _ = run(device_lib, out, spy, *args)
    assert again.returncode == 0
    assert {p: ID3(p)["TIT2"].text[0] for p in (colon, numbered)} == made_from
    assert ID3(out / "mp3" / "AC" / "DC" / "01 Track_ _1__ (3).mp3")["TIT2"].text == ["star"]
    # The first one's source gone: the second keeps its number.
    (device_lib / "AC" / "DC" / '01 Track: "1"?.flac').unlink()
    third, _ = run(device_lib, out, spy, *args, "--delete")
    assert third.returncode == 0 and not colon.exists()
    assert ID3(numbered)["TIT2"].text == ["underscores"]
    assert {r["conversion_status"] for r in third.rows() if "(2)" in r["outfile"]} == {"SUCCESS (skipped: up to date)"}


def test_lossy_convert_skip_and_max_bitrate(device_lib, tmp_path, spy):
    out = tmp_path / "out"
    result, started = run(device_lib, out, spy, "--lossy", "convert")
    assert result.returncode == 0, result.stderr
    album, source = out / "mp3" / "Album.", device_lib / "Album."
    # mp3 -> mp3 is a copy; the other formats are converted, with their tags.
    assert (album / "bought.mp3").read_bytes() == (source / "bought.mp3").read_bytes()
    assert ID3(album / "store.mp3")["TIT2"].text == ["Bought m4a"] and decodes(album / "store.mp3")
    for name, title in (("bought.opus", "Bought mp3"), ("store.opus", "Bought m4a")):
        converted = out / "opus" / "Album." / name
        assert decodes(converted) and OggOpus(converted)["TITLE"] == [title]
    assert not list(out.rglob("*.m4a"))
    assert sum(line.startswith("ffmpeg") for line in started) == 3  # one decoder per conversion
    statuses = {(Path(r["outfile"]).name, r["conversion_status"]) for r in result.rows()}
    assert ("store.opus", "SUCCESS (converted)") in statuses and ("bought.mp3", "SUCCESS (copied)") in statuses
    again, started = run(device_lib, out, spy, "--lossy", "convert")
    assert started == [] and {r["conversion_status"] for r in again.rows()} == {"SUCCESS (skipped: up to date)"}
    # Into aac: the m4a is copied, the mp3 converted.
    aac = run_flac2all("aac", "-o", tmp_path / "aac", "--lossy", "convert", device_lib)
    assert aac.returncode == 0, aac.stderr
    assert (tmp_path / "aac" / "aac" / "Album." / "store.m4a").read_bytes() == (source / "store.m4a").read_bytes()
    assert MP4(tmp_path / "aac" / "aac" / "Album." / "bought.m4a")["\xa9nam"] == ["Bought mp3"]
    # Above --max-bitrate even mp3 -> mp3 is re-encoded.
    capped, _ = run(device_lib, tmp_path / "capped", spy, "--lossy", "copy", "--max-bitrate", "192")
    assert capped.returncode == 0, capped.stderr
    capped_mp3 = tmp_path / "capped" / "mp3" / "Album." / "bought.mp3"
    assert capped_mp3.read_bytes() != (source / "bought.mp3").read_bytes() and decodes(capped_mp3)
    assert ID3(capped_mp3)["TIT2"].text == ["Bought mp3"]
    assert (tmp_path / "capped" / "mp3" / "Album." / "store.m4a").exists()  # 96 kbit/s: copied
    # skip: not even -c copies them.
    skipped, _ = run(device_lib, tmp_path / "skipped", spy, "--lossy", "skip", "-c")
    assert skipped.returncode == 0
    names = {p.name for p in (tmp_path / "skipped" / "mp3" / "Album.").iterdir()}
    assert "cover.jpg" in names and not {"bought.mp3", "store.m4a"} & names


def test_a_fat32_tree_on_a_real_vfat_file_system(device_lib, tmp_path, spy):
    """Written straight onto a FAT32 file system (a loop device, as root);
    where none can be mounted (no loop device, or a kernel without vfat),
    the tree is copied onto a FAT32 image with mtools, which refuses what
    FAT32 cannot hold."""
    require("mkfs.vfat")
    image = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-F", "32", "-C", str(image), str(64 * 1024)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop,utf8", str(image), str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        require("mcopy", "mdir")
        out = tmp_path / "out"
        assert run(device_lib, out, spy, *PROFILE)[0].returncode == 0
        # mcopy refuses a name FAT32 cannot hold (and asks about a clash: no stdin, so it fails).
        mcopy = ["mcopy", "-s", "-i", str(image), str(out / "mp3"), "::/"]
        subprocess.run(mcopy, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        listed = subprocess.run(["mdir", "-/", "-b", "-i", str(image), "::/mp3"], capture_output=True, text=True)
        on_fat = {line.rstrip("/").removeprefix("::/") for line in listed.stdout.splitlines() if line.strip()}
        assert {f"mp3/{p.relative_to('mp3').as_posix()}" for p in outputs(out) if p.parts[0] == "mp3"} <= on_fat
        return
    try:
        first, _ = run(device_lib, mnt, spy, *PROFILE)
        assert first.returncode == 0, first.stdout + first.stderr
        assert_fat32_names(mnt)
        assert len(list((mnt / "mp3").rglob("*.mp3"))) == 10
        assert {r["conversion_status"].split(" (")[0] for r in read_log(mnt)} == {"SUCCESS"}
        # Remounted (FAT32 keeps mtimes to 2 s): the next run still does nothing.
        subprocess.run(["umount", str(mnt)], check=True)
        subprocess.run(["mount", "-o", "loop,utf8", str(image), str(mnt)], check=True)
        again, started = run(device_lib, mnt, spy, *PROFILE)
        assert again.returncode == 0 and started == []
        statuses = {r["conversion_status"] for r in again.rows()}
        assert statuses <= {"SUCCESS (skipped: up to date)", "SUCCESS (skipped: unchanged)"}
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_playlists_keep_their_encoding_and_drop_what_is_outside(tmp_path, spy):
    lib = tmp_path / "lib"
    make_flac(lib / "Ä" / "one.flac", seconds=0.15)
    (lib / "old.m3u").write_bytes("#EXTM3U\r\nÄ\\one.flac\r\n/elsewhere/x.flac\r\n".encode("cp1252"))
    result, _ = run(lib, tmp_path / "out", spy, "--playlists")
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "out" / "opus" / "old.m3u").read_bytes()
    assert written == "#EXTM3U\r\nÄ/one.opus\r\n".encode("cp1252")
    assert "/elsewhere/x.flac dropped" in result.stderr
