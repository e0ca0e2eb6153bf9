"""Output names: FAT32 spelling as a unit and through a whole device
profile (onto a real vfat file system too), names kept as the state
recorded them, and hostile source names that convert and survive the CSV."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from mutagen.flac import Picture
from mutagen.id3 import ID3
from mutagen.oggopus import OggOpus
from pathvalidate import is_valid_filename
from PIL import Image

from flac2all.model import Names
from flac2all.planning.names import Namer, component, units
from tests.conftest import decodes, make_flac, read_log, require, run_flac2all, status_by_name
from tests.planning.device import jpeg, run


def test_components_are_spelled_for_fat32():
    assert component('Track: "1"?.flac') == "Track_ _1__.flac"
    assert component("CON.mp3") == "CON_.mp3" and component("nul") == "nul_"
    assert component("Album.", is_file=False) == "Album" and component(" . ", is_file=False) == "_"
    assert component("a\udcffb.mp3") == "a_b.mp3"  # a name whose bytes were not UTF-8
    # A reserved name with a trailing dot or space: FAT32 drops those, so 'aux_.' would be 'aux_'.
    assert component("aux. ", is_file=False) == "aux_" and component("nul..") == "nul_"
    assert is_valid_filename(component("con.", is_file=False), platform="windows")
    long = component("x" * 250 + ".mp3", tag=" (2)")
    assert long.endswith("x (2).mp3") and units(long) == 255
    wide = component("😀" * 200 + ".mp3")  # 2 UTF-16 units and 4 bytes each
    assert len(os.fsencode(wide)) <= 255 and wide.endswith(".mp3") and is_valid_filename(wide, platform="windows")


def test_the_namer_keeps_sources_apart_folders_together_and_names_stable():
    out = Path("/out")
    namer = Namer(out, Names.FAT32, 255, {})
    a = namer.output(Path("/in/A:B/1.flac"), out / "mp3/A:B/x?.mp3")
    b = namer.output(Path("/in/A?B/2.flac"), out / "mp3/a?b/X:.mp3")
    assert (a, b) == (out / "mp3/A_B/x_.mp3", out / "mp3/A_B/X_ (2).mp3")  # one folder, as FAT32 sees it
    assert namer.output(Path("/in/A:B/1.flac"), out / "mp3/A:B/x?.mp3") == a  # asked again: the same
    # Next run, the state remembers: a new source sorted first takes neither name.
    again = Namer(out, Names.FAT32, 255, {a: Path("/in/A:B/1.flac"), b: Path("/in/A?B/2.flac")})
    assert again.output(Path("/in/A*B/0.flac"), out / "mp3/A*B/x*.mp3") == out / "mp3/A_B/x_ (3).mp3"
    assert again.output(Path("/in/A?B/2.flac"), out / "mp3/a?b/X:.mp3") == b
    # A deep folder is cut, the same way for all its files, leaving room for names.
    deep = Namer(out, Names.FAT32, 120, {})
    folder = out / "mp3" / ("d" * 100) / ("e" * 100)
    one = deep.output(Path("/in/1"), folder / ("n" * 100 + ".mp3"))
    two = deep.output(Path("/in/2"), folder / "short.mp3")
    assert one.parent == two.parent and units(one.relative_to(out).as_posix()) <= 120
    assert two.name == "short.mp3" and one.name.endswith(".mp3")
    assert Namer(out, Names.POSIX, 255, {}).output(Path("/in/a"), out / "mp3/a:b.mp3") == out / "mp3/a:b.mp3"


def test_a_name_that_cannot_fit_is_unfit_never_a_loop():
    """A clash with no room for a number, a folder that leaves no room for
    a name: the Namer says so at once (the planner refuses the task)."""
    out = Path("/out")
    namer = Namer(out, Names.FAT32, 9, {})
    first = namer.output(Path("/in/Song.flac"), out / "m/Song.mp3")
    second = namer.output(Path("/in/song.flac"), out / "m/song.mp3")
    assert first == out / "m/Son.mp3" and os.fspath(first) not in namer.unfit
    assert namer.unfit[os.fspath(second)] == "no name with a number to tell it from /in/Song.flac fits --max-path 9"
    deep = Namer(out, Names.FAT32, 255, {})
    folder = out.joinpath(*["d"] * 130)
    for name in ("a.mp3", "b.mp3"):
        output = deep.output(Path(f"/in/{name}"), folder / name)
        assert deep.unfit[os.fspath(output)] == "no name for it fits --max-path 255 after its folder's 260 units"


def test_a_limit_that_leaves_no_room_for_a_name_is_refused(tmp_path):
    make_flac(tmp_path / "in" / "a.flac", seconds=0.1)
    for limit in ("3", "12", "39"):
        run = run_flac2all("mp3", "--names", "fat32", "--max-path", limit, "-o", tmp_path / "out", tmp_path / "in")
        assert run.returncode == 2 and f"must be at least 40 (room for a file's name), not {limit}" in run.stderr
    config = tmp_path / "config.toml"
    profile = [
        "[profile.tiny]",
        'modes = ["mp3"]',
        'names = "fat32"',
        "max-path = 3",
        f'outdir = "{tmp_path / "out"}"',
        f'input = "{tmp_path / "in"}"',
    ]
    config.write_text("\n".join(profile) + "\n")
    run = run_flac2all("--config", config, "--profile", "tiny", timeout=20)
    assert run.returncode == 2 and "max-path: must be at least 40" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


def test_sources_too_deep_for_any_name_fail_saying_so(tmp_path):
    """130 folders deep, the folder alone passes the 255 units: each of its
    sources fails with the cause, in a dry run as in a run; the others convert."""
    deep = tmp_path.joinpath("in", *["d"] * 130)
    for name in ("a", "b", "c"):
        make_flac(deep / f"{name}.flac", seconds=0.1)
    make_flac(tmp_path / "in" / "top.flac", seconds=0.1)
    out = tmp_path / "out"
    dry = run_flac2all("mp3", "--names", "fat32", "--dry-run", "-o", out, tmp_path / "in", timeout=30)
    assert dry.returncode == 0 and dry.stdout.count("no name for it fits --max-path 255") == 3, dry.stdout
    run = run_flac2all("mp3", "--names", "fat32", "-o", out, tmp_path / "in", timeout=30)
    rows = status_by_name(out)
    assert rows.pop("top.flac") == "SUCCESS"
    assert set(rows) == {"a.flac", "b.flac", "c.flac"} and run.returncode == 1
    for status in rows.values():
        assert status.startswith("ERROR: output ") and status.endswith(
            "not written: no name for it fits --max-path 255 after its folder's 264 units"
        ), status


def test_a_short_max_path_cuts_the_album_never_the_modes_folder(tmp_path):
    """--max-path 40 under a long album: the album's folder is cut, each
    mode keeps its own folder (cut to 'f', flac, f:flac and f:alac wrote
    one tree, and f:flac's outputs clashed with flac's)."""
    album = tmp_path / "in" / ("A" * 60)
    for n in (1, 2):
        make_flac(album / f"{'s' * 80}{n}.flac", seconds=0.1)
    out = tmp_path / "out"
    run = run_flac2all("flac,f:flac,f:alac", "--names", "fat32", "--max-path", "40", "-o", out, tmp_path / "in")
    assert run.returncode == 0, run.stdout + run.stderr
    rels = outputs(out)
    assert {rel.parts[0] for rel in rels} == {"flac", "f_flac", "f_alac"} and len(rels) == 6, rels
    assert_fat32_names(out, max_path=40)
    namer = Namer(out, Names.FAT32, 40, {}, kept=("f_alac",))
    output = namer.output(Path("/in/1.flac"), out / "f_alac" / ("A" * 60) / "song.m4a")
    assert output.relative_to(out).parts[0] == "f_alac"


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


@pytest.mark.slow
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


@pytest.mark.slow
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


HOSTILE = [
    "with space.flac",
    "quote'single.flac",
    'quote"double.flac',
    "amp & dollar $HOME.flac",
    "-leading dash.flac",
    "ünïcødé ☃ 日本.flac",
    "comma, and\nnewline.flac",
    "UPPER.FLAC",
]


def test_hostile_names_convert_and_survive_the_csv(tmp_path):
    root = tmp_path / "in"
    names = [*HOSTILE, "x.flac/inside folder named x.flac.flac", "My.flac.Rips/track.flac"]
    for name in names:
        make_flac(root / name, seconds=0.2)
    raw = os.fsencode(root) + b"/latin1-\xe9.flac"  # not valid UTF-8
    shutil.copy(root / "with space.flac", raw)
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-o", out, root)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = read_log(out)
    assert len(rows) == 2 * (len(names) + 1)
    expected = {os.fsencode(root / n) for n in names} | {raw}
    assert {os.fsencode(r["infile"]) for r in rows} == expected
    for row in rows:
        outfile = Path(row["outfile"])
        assert outfile.is_file(), row
        rel = Path(row["infile"]).relative_to(root)
        assert outfile == out / row["format"] / rel.with_suffix(outfile.suffix)
    # pathlib, not string replacement: the folder keeps its name.
    assert (out / "mp3" / "My.flac.Rips" / "track.mp3").is_file()
    assert (out / "mp3" / "x.flac" / "inside folder named x.flac.mp3").is_file()
    assert (out / "opus" / "UPPER.opus").is_file()
