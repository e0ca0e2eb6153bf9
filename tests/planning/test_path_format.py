"""--path-format: templates as units (fallbacks, format specs, the
multi-disc rule), and a library laid out badly converted into a template
layout with fat32 names (onto a real vfat file system too, where one can
be mounted); a tag edit that changes an output's path moves it, no encode,
and the next run does nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePath
from types import SimpleNamespace

import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3

from flac2all.codecs import CODECS
from flac2all.errors import UsageError
from flac2all.model import Action, Names, Settings, SourceFacts
from flac2all.planning import hashes, plan
from flac2all.planning.discovery import Source, Tree
from flac2all.planning.template import multi_disc, parse
from flac2all.records import Record
from tests.conftest import make_flac, read_log, require, run_flac2all
from tests.planning.device import run
from tests.planning.test_names import assert_fat32_names, outputs

TEMPLATE = "{albumartist|artist|Unknown Artist}/{year} - {album}/{disc:02?}{track:02} {title}"
SOURCE = PurePath("rips/x/track.flac")


def render(comments: dict[str, str], template: str = TEMPLATE) -> str:
    return parse(template).render(tuple(comments.items()), SOURCE, ".mp3").as_posix()


def test_a_template_with_fallbacks_and_format_specs():
    tags = {"ARTIST": "AC/DC", "DATE": "1980-07-25", "ALBUM": "Back in Black", "TRACKNUMBER": "1/10"}
    assert render({**tags, "TITLE": "Hells Bells"}) == "AC_DC/1980 - Back in Black/01 Hells Bells.mp3"
    assert render({**tags, "ALBUMARTIST": "Various", "TITLE": "x"}) == "Various/1980 - Back in Black/01 x.mp3"
    assert render({}) == "Unknown Artist/-/_.mp3"  # a text fallback; an empty name is "_"
    assert render({"GENRE": "Jazz"}, '{genre|"Misc"}/{mood|"Misc"}/{filename} ({folder})') == "Jazz/Misc/track (x).mp3"
    assert render({"TRACKNUMBER": "B2"}, "{track:02}") == "B2.mp3"  # not a number: its text as it is
    every_value = parse("{artist}").render((("ARTIST", "a"), ("Artist", "b")), SOURCE, ".mp3")
    assert every_value == PurePath("a, b.mp3")  # every value of a tag, case ignored


@pytest.mark.parametrize(
    ("disc", "total", "multi"),
    [
        ("1", "1", False),
        ("1", None, False),  # no total: disc 1 is a single disc's
        ("2", None, True),
        ("1", "2", True),
        ("1/2", None, True),  # the total after the '/'
        (None, None, False),
    ],
)
def test_the_multi_disc_rule(disc, total, multi):
    tags = {k: v for k, v in (("DISCNUMBER", disc), ("DISCTOTAL", total)) if v is not None}
    assert multi_disc(tuple(tags.items())) is multi
    expected = f"{int(disc.split('/')[0]):02}07" if multi and disc else "07"
    assert render({**tags, "TRACKNUMBER": "7"}, "{disc:02?}{track:02}") == expected + ".mp3"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("{artist", "brace"),
        ("a//b", "empty folder"),
        ("{track:zz}", "format spec"),
        ("{disc?:02}{track:02}", r"the '\?' goes last: \{disc:02\?\}"),
        ("{disc?:02?}", r"the '\?' goes last: \{disc:02\?\}"),
        ("{disc ?:02}", r"the '\?' goes last: \{disc:02\?\}"),
        ("{}", "empty"),
        (" ", "empty"),
        ("x\0y/{title}", "control character"),  # (a profile's "\u0000": os.stat raised ValueError)
        ('{title|"a\nb"}', "control character"),
    ],
)
def test_a_template_that_is_not_one_is_refused_saying_so(bad, why):
    with pytest.raises(UsageError, match=why):
        parse(bad)


def bad_library(root: Path) -> None:
    """Two albums spread over folders that say nothing of them, and a name
    FAT32 cannot hold."""
    album = {"ALBUMARTIST": "AC/DC", "ALBUM": 'Live: "At Donington"?', "DATE": "1992-10-27", "DISCTOTAL": "2"}
    make_flac(
        root / "incoming" / "a.flac",
        seconds=0.15,
        tags={**album, "DISCNUMBER": "1", "TRACKNUMBER": "1", "TITLE": "Thunderstruck"},
    )
    make_flac(
        root / "old" / "disc two" / "z.flac",
        seconds=0.15,
        tags={**album, "DISCNUMBER": "2", "TRACKNUMBER": "3", "TITLE": "Highway"},
    )
    make_flac(
        root / "incoming" / "b.flac",
        seconds=0.2,
        tags={"ARTIST": "Solo", "ALBUM": "One", "DATE": "2001", "TRACKNUMBER": "2", "TITLE": "Same"},
    )
    make_flac(
        root / "misc" / "c.flac",
        seconds=0.25,
        tags={"ARTIST": "Solo", "ALBUM": "One", "DATE": "2001", "TRACKNUMBER": "2", "TITLE": "Same"},
    )  # the same path
    (root / "old" / "disc two" / "cover.jpg").write_bytes(b"not really a jpeg")


ALBUM = "AC_DC/1992 - Live_ _At Donington__"
LAID_OUT = {
    f"{ALBUM}/0101 Thunderstruck.mp3",
    f"{ALBUM}/0203 Highway.mp3",
    f"{ALBUM}/cover.jpg",  # copies follow the album's folder
    "Solo/2001 - One/02 Same.mp3",
    "Solo/2001 - One/02 Same (2).mp3",  # a clash numbered, as fat32 names are
}


def laid_out(out: Path, mode: str = "mp3") -> set[str]:
    return {p.relative_to(mode).as_posix() for p in outputs(out) if p.parts[0] == mode}


@pytest.mark.slow
def test_a_bad_layout_into_a_template_then_a_tag_edit_moves_an_output(tmp_path, spy):
    root, out = tmp_path / "in", tmp_path / "out"
    bad_library(root)
    args = ("--path-format", TEMPLATE, "--names", "fat32", "-c")
    first, started = run(root, out, spy, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert laid_out(out) == LAID_OUT
    assert laid_out(out, "opus") == {p.replace(".mp3", ".opus") for p in LAID_OUT}
    assert_fat32_names(out)
    assert len([s for s in started if s.startswith("flac ")]) == 4  # one decoder for each source's two modes
    assert ID3(out / "mp3" / ALBUM / "0203 Highway.mp3")["TIT2"].text == ["Highway"]

    # A tag edit that changes the path: the output moved and retagged, never encoded (the
    # source's size changed too: a comment larger than its padding).
    edited = root / "old" / "disc two" / "z.flac"
    size = edited.stat().st_size
    f = FLAC(edited)
    f["TITLE"] = "Highway to Hell"
    f["COMMENT"] = "x" * 20000
    f.save()
    assert edited.stat().st_size != size
    second, started = run(root, out, spy, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert started == []
    moved = {Path(r["outfile"]).name: r["conversion_status"] for r in read_log(out) if "Highway" in r["outfile"]}
    assert moved == {
        "0203 Highway to Hell.mp3": f"SUCCESS (moved from {out / 'mp3' / ALBUM / '0203 Highway.mp3'})",
        "0203 Highway to Hell.opus": f"SUCCESS (moved from {out / 'opus' / ALBUM / '0203 Highway.opus'})",
    }
    assert ID3(out / "mp3" / ALBUM / "0203 Highway to Hell.mp3")["TIT2"].text == ["Highway to Hell"]
    assert f"{ALBUM}/0203 Highway.mp3" not in laid_out(out)

    # The next run does nothing.
    third, started = run(root, out, spy, *args)
    assert third.returncode == 0 and started == []
    assert {r["conversion_status"] for r in read_log(out)} == {"SUCCESS (skipped: up to date)"}

    # Another template: every output moved, none encoded; the copies made anew, the old ones orphans
    # (deleted with --delete, and their folders with them).
    other = ("--path-format", "{albumartist|artist}/{title}", "--names", "fat32", "-c", "--delete")
    fourth, started = run(root, out, spy, *other)
    assert fourth.returncode == 0 and started == [], fourth.stdout + fourth.stderr
    assert laid_out(out) == {
        "AC_DC/Thunderstruck.mp3",
        "AC_DC/Highway to Hell.mp3",
        "AC_DC/cover.jpg",
        "Solo/Same.mp3",
        "Solo/Same (2).mp3",
    }
    flac_rows = [r for r in read_log(out) if r["infile"].endswith(".flac")]
    assert {r["conversion_status"].split(" from ")[0] for r in flac_rows} == {"SUCCESS (moved"}
    assert {r["conversion_status"] for r in read_log(out) if ALBUM in r["outfile"]} == {"SUCCESS (deleted orphan)"}
    assert not (out / "mp3" / ALBUM).exists()


@pytest.mark.slow
def test_a_template_layout_on_a_real_vfat_file_system(tmp_path, spy):
    """As the fat32 profile's test: written onto a mounted FAT32 image, or,
    where none can be mounted, copied onto one with mtools (which refuses
    what FAT32 cannot hold)."""
    require("mkfs.vfat")
    root = tmp_path / "in"
    bad_library(root)
    args = ("--path-format", TEMPLATE, "--names", "fat32", "-c")
    image = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-F", "32", "-C", str(image), str(64 * 1024)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop,utf8", str(image), str(mnt)], capture_output=True).returncode != 0:
        require("mcopy", "mdir")
        out = tmp_path / "out"
        assert run(root, out, spy, *args)[0].returncode == 0
        subprocess.run(
            ["mcopy", "-s", "-i", str(image), str(out / "mp3"), "::/"],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        listed = subprocess.run(["mdir", "-/", "-b", "-i", str(image), "::/mp3"], capture_output=True, text=True)
        on_fat = {line.rstrip("/").removeprefix("::/mp3/") for line in listed.stdout.splitlines() if line.strip()}
        assert LAID_OUT <= on_fat
        return
    try:
        first, _ = run(root, mnt, spy, *args)
        assert first.returncode == 0, first.stdout + first.stderr
        assert laid_out(mnt) == LAID_OUT
        again, started = run(root, mnt, spy, *args)
        assert again.returncode == 0 and started == []
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_playlists_point_at_the_outputs_where_the_layout_put_them(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    make_flac(root / "x" / "1.flac", seconds=0.15, tags={"ARTIST": "A", "TITLE": "One"})
    make_flac(root / "y" / "2.flac", seconds=0.15, tags={"ARTIST": "B", "TITLE": "Two"})
    (root / "mix.m3u8").write_text("#EXTM3U\nx/1.flac\ny/2.flac\n")
    result = run_flac2all("mp3", "-o", out, "--path-format", "{artist}/{title}", "--playlists", root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "mp3" / "mix.m3u8").read_text().splitlines() == ["#EXTM3U", "A/One.mp3", "B/Two.mp3"]


LIB, OUT = Path("/lib"), Path("/out")


def planned(comments: dict[str, tuple], **settings) -> dict[str, str]:
    """The planner alone (its seams answered from ``comments``, by source
    name): each mp3 task's output below OUTDIR -> its source's name, or
    the refusal's reason."""
    sources = [Source(LIB / name, Path(name), 100, 1) for name in comments]
    read: list[str] = []

    def meta(path: Path):
        read.append(path.name)
        return comments[path.name], SourceFacts(100, 1, "aa", "t", "p")

    settings = Settings(LIB, OUT, ("mp3",), **settings)
    the_plan = plan.build(Tree(sources, []), (CODECS["mp3"],), settings, {}, {}, stat=lambda p: None, meta=meta)
    out = {t.output.relative_to(OUT / "mp3").as_posix(): t.source.name for t in the_plan.tasks}
    out.update({f"refused {r.task.source.name}": r.message for r in the_plan.refused})
    out["read"] = ",".join(sorted(set(read)))
    return out


def test_clashes_are_numbered_with_fat32_names_and_refused_with_posix_ones():
    same = (("ARTIST", "A"), ("TITLE", "T"))
    comments = {"1.flac": same, "2.flac": same}
    fat = planned(comments, path_format="{artist}/{title}", names=Names.FAT32)
    assert fat == {"A/T.mp3": "1.flac", "A/T (2).mp3": "2.flac", "read": "1.flac,2.flac"}
    posix = planned(comments, path_format="{artist}/{title}")
    assert posix["A/T.mp3"] == "1.flac" and "1.flac has the same output" in posix["refused 2.flac"]


def test_a_tag_makes_no_folder_nor_climbs_out():
    comments = {"1.flac": (("ALBUM", ".."), ("TITLE", "a/b")), "2.flac": (("ALBUM", "x\0y"), ("TITLE", "../up"))}
    got = planned(comments, path_format="{album}/{title}")
    assert {k: v for k, v in got.items() if k != "read"} == {"_/a_b.mp3": "1.flac", "xy/.._up.mp3": "2.flac"}


def test_without_a_template_or_a_query_no_tags_are_read():
    assert planned({"1.flac": (("TITLE", "T"),)})["read"] == ""


def test_a_known_layout_takes_an_unchanged_source_s_output_from_its_row_unread():
    old, changed, new = (Source(LIB / n, Path(n), 100, 1) for n in ("old.flac", "changed.flac", "new.flac"))
    settings = Settings(LIB, OUT, ("mp3",), path_format="{title}")
    mp3 = CODECS["mp3"]
    wanted = hashes.settings_hash(mp3, settings, {})
    st = SimpleNamespace(st_size=50, st_mtime_ns=5)
    records = {
        OUT / "mp3" / f"{s.path.stem}-recorded.mp3": Record.made(
            OUT / "mp3" / f"{s.path.stem}-recorded.mp3", s.path, "mp3", SourceFacts(100, 1, "aa", "t", "p"), wanted, st
        )
        for s in (old, changed)
    }
    read: list[str] = []

    def meta(path: Path):
        read.append(path.name)
        return (("TITLE", path.stem),), SourceFacts(100, 2, "aa", "t2", "p")

    changed = Source(changed.path, changed.rel, 100, 2)  # touched since its row
    for known, reads in ((True, ["changed.flac", "new.flac"]), (False, ["changed.flac", "new.flac", "old.flac"])):
        read.clear()
        the_plan = plan.build(
            Tree([old, changed, new], []),
            (mp3,),
            settings,
            records,
            {},
            stat=lambda p: st,
            meta=meta,
            layout_known=known,
        )
        outputs = {t.source.name: t.output.name for t in the_plan.every_task() if t.action is not Action.ORPHAN}
        assert sorted(read) == reads
        assert outputs["old.flac"] == ("old-recorded.mp3" if known else "old.mp3")
        assert outputs["changed.flac"] == "changed.mp3" and outputs["new.flac"] == "new.mp3"


@pytest.mark.slow
def test_a_template_dropped_then_given_again_is_not_trusted_from_the_rows(tmp_path):
    """The state knows its rows follow a template after a run of it with no
    failure; a run of another layout forgets that first, so the template's
    next run reads every tag and moves every output back."""
    root, out = tmp_path / "in", tmp_path / "out"
    make_flac(root / "x" / "1.flac", seconds=0.15, tags={"ARTIST": "A", "TITLE": "One"})
    make_flac(root / "y" / "2.flac", seconds=0.15, tags={"ARTIST": "B", "TITLE": "Two"})
    layout = ("--path-format", "{artist}/{title}")
    assert run_flac2all("mp3", "-o", out, "-q", *layout, root).returncode == 0
    # A no-op run decides from stat and the state alone: a tag edit that keeps the
    # source's size and mtime is not seen, as it is not without a template.
    edited = root / "x" / "1.flac"
    before = edited.stat()
    f = FLAC(edited)
    f["TITLE"] = "Ono"
    f.save()
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert edited.stat().st_size == before.st_size
    assert run_flac2all("mp3", "-o", out, "-q", *layout, root).returncode == 0
    assert {r["conversion_status"] for r in read_log(out)} == {"SUCCESS (skipped: up to date)"}
    assert run_flac2all("mp3", "-o", out, "-q", root).returncode == 0  # the source tree: every output moved
    assert {p.relative_to(out / "mp3").as_posix() for p in (out / "mp3").rglob("*.mp3")} == {"x/1.mp3", "y/2.mp3"}
    again = run_flac2all("mp3", "-o", out, "-q", *layout, root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p.relative_to(out / "mp3").as_posix() for p in (out / "mp3").rglob("*.mp3")} == {"A/Ono.mp3", "B/Two.mp3"}


def test_a_format_spec_that_raises_on_a_value_leaves_the_value_as_it_is():
    # 'c' of a number past Unicode's raised OverflowError, a traceback out of the run.
    assert render({"TRACKNUMBER": "99999999"}, "{track:c}") == "99999999.mp3"
    assert render({"TITLE": "x"}, "{title:d}") == "x.mp3"
    with pytest.raises(UsageError, match="wider than a name"):
        parse("{track:>1000000000}")  # refused before format() makes a name of a gigabyte


def test_a_tag_never_puts_an_output_into_the_state_folder_or_onto_the_log(tmp_path):
    """With -n m the template's first folder is at OUTDIR's top, where
    flac2all keeps its state folder and its log."""
    for n, album in enumerate((".flac2all", "conversion_results.log", "CONVERSION_RESULTS.LOG.previous", ".flac2all.")):
        make_flac(tmp_path / "in" / f"{n}.flac", seconds=0.1, tags={"ALBUM": album, "TITLE": "state"})
    out = tmp_path / "out"
    result = run_flac2all("flac", "-n", "m", "-o", out, "--path-format", "{album}/{title}", tmp_path / "in", timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / ".flac2all").iterdir() if p.suffix == ".flac") == []
    assert (out / "conversion_results.log").is_file() and len(read_log(out)) == 4
    assert {p.parent.name for p in out.rglob("*.flac")} == {
        "_.flac2all",
        "_conversion_results.log",
        "_CONVERSION_RESULTS.LOG.previous",
        "_.flac2all.",
    }
    again = run_flac2all("flac", "-n", "m", "-o", out, "--path-format", "{album}/{title}", tmp_path / "in", timeout=60)
    assert again.returncode == 0 and "encoded" not in again.stdout
