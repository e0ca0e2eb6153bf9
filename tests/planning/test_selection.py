"""Selection: --include/--exclude globs (pruned in the walk) and --query
tests on a FLAC's tags, alone and through a profile that converts exactly
the chosen sources; a source that leaves the selection is an orphan, kept,
deleted only with --delete."""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import pytest
from mutagen.flac import FLAC

from flac2all.errors import UsageError
from flac2all.lines import SOURCE_HERE
from flac2all.planning import discovery
from flac2all.planning.selection import Condition, Glob, Selection
from tests.conftest import make_flac, read_log, run_flac2all

COMMENTS = (("GENRE", "Pop"), ("Genre", "jazz"), ("DATE", "1994-05-01"), ("RATING", "4"), ("TRACKNUMBER", "3/12"))


@pytest.mark.parametrize(
    ("query", "holds"),
    [
        ("genre=Jazz", True),  # case ignored, any value of a multi-valued tag
        ("genre=Ja", False),
        ("genre~AZ", True),
        ("genre!=rock", True),
        ("genre!=POP", False),
        ("year>=1994", True),  # from DATE's leading number
        ("year>1994", False),
        ("date<1995", True),
        ("rating>=4", True),
        ("rating=4.0", True),  # as numbers when the query's value is one
        ("rating<=3", False),
        ("tracktotal=12", True),  # from TRACKNUMBER's "/12"
        ("-genre=jazz", False),
        ("-albumtype=audiobook", True),  # a missing tag passes a negated test
        ("albumtype=audiobook", False),  # and fails a positive one
        ("albumtype!=audiobook", False),
        ("!mood~sad", True),
        ("label<5", False),
    ],
)
def test_a_query_test_on_comments(query, holds):
    assert Condition.of(query).holds(COMMENTS) is holds


@pytest.mark.parametrize(
    "bad", ["genre", "=Jazz", "year>=nineteen", "rating<", "", "year>=199O", "rating>4stars", "year<1e999"]
)
def test_a_query_that_is_not_one_is_refused_saying_so(bad):
    with pytest.raises(UsageError, match="not a query"):
        Condition.of(bad)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("Audiobooks", "Audiobooks", True),  # no '/': a name at any depth
        ("Audiobooks", "Spoken/Audiobooks", True),
        ("Audiobooks", "Audiobooks2", False),
        ("*.cue", "a/b/disc.cue", True),
        ("Jazz/**", "Jazz/x/y.flac", True),
        ("Jazz/**", "Rock/Jazz/y.flac", False),  # a '/': from INPUTDIR down
        ("/Jazz", "Jazz", True),
        ("/Jazz", "Rock/Jazz", False),
        ("Jazz/**/Live*", "Jazz/Live 1", True),  # '**': no folder too
        ("Jazz/**/Live*", "Jazz/a/b/Live 2", True),
        ("Jazz/*/Live*", "Jazz/a/b/Live 2", False),  # '*': within one part
        ("disc[12]", "x/disc2", True),
        ("disc[!12]", "x/disc2", False),
        ("a?c", "abc", True),
        ("jazz", "Jazz", False),  # case counts
    ],
)
def test_a_glob_on_a_relative_path(pattern, path, matches):
    assert Glob.of(pattern).matches(path) is matches


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("a[!x]b", "a/b", False),  # a set never matches the '/' between parts
        ("[!]", "[!]", True),  # no member: the text itself, as fnmatch has it
        ("[!]]", "x", True),  # a ']' first is a member
        ("[!]]", "]", False),
        ("[^a]", "^", True),  # '^' is a member; '!' negates
        ("[^a]", "b", False),
        ("[[:alpha:]]", "a", False),  # no classes: '[' and ':' are members
        ("[\\]]", "\\]", True),
        ("[a-c]", "b", True),
    ],
)
def test_a_glob_set_is_one_character_of_one_part(pattern, path, matches):
    assert Glob.of(pattern).matches(path) is matches


def test_a_glob_that_is_not_one_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a glob: '\\[z-a\\]'"):
        Glob.of("[z-a]")
    make_flac(tmp_path / "in" / "a.flac")
    result = run_flac2all("mp3", "-o", tmp_path / "out", "--exclude", "[z-a]", tmp_path / "in", timeout=60)
    assert result.returncode == 2 and "not a glob" in result.stderr and "Traceback" not in result.stderr


def test_globs_that_leave_out_every_flac_say_so(tmp_path):
    # The input has FLACs: 'no FLAC files under it' alone sent the user looking for an unmounted disk.
    make_flac(tmp_path / "in" / "Rock" / "a.flac")
    result = run_flac2all("mp3", "-o", tmp_path / "out", "--include", "Jazz", tmp_path / "in", timeout=60)
    assert result.returncode == 2
    assert "no FLAC files under" in result.stderr and "that --include and --exclude select" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_glob_matching_a_folder_selects_or_excludes_what_is_in_it():
    chosen = Selection.of(include=["/Jazz"], exclude=["Jazz/Bad*", "*.log"])
    assert chosen.takes(PurePath("Jazz/Album/01.flac"))
    assert not chosen.takes(PurePath("Jazz/Bad album/01.flac"))
    assert not chosen.takes(PurePath("Jazz/Album/rip.log"))
    assert not chosen.takes(PurePath("Rock/Jazz.flac"))
    assert chosen.walks(PurePath("Jazz")) and chosen.walks(PurePath("Jazz/Album"))
    # Folders no include can reach, and excluded ones, are not walked.
    assert not chosen.walks(PurePath("Rock")) and not chosen.walks(PurePath("Jazz/Bad one"))
    assert Selection.of(include=["Live*"]).walks(PurePath("Rock/deep"))  # matches at any depth


def test_excluded_folders_are_not_walked(tmp_path):
    root = tmp_path / "in"
    for rel in ("Jazz/a.flac", "Jazz/cover.jpg", "Audiobooks/Book/b.flac", "Rock/c.flac", "Rock/Live/d.flac"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    chosen = Selection.of(exclude=["Audiobooks", "Live"])
    walked = [listing.folder.relative_to(root).as_posix() for listing in discovery.walk(root, select=chosen)]
    assert walked == [".", "Jazz", "Rock"]  # neither Audiobooks nor its subfolders listed
    tree = discovery.discover(root, select=Selection.of(include=["Jazz/*.flac", "Rock"]))
    assert [s.rel.as_posix() for s in tree.flacs] == ["Jazz/a.flac", "Rock/Live/d.flac", "Rock/c.flac"]
    assert tree.others == []


PROFILE = """\
[profile.car]
modes = ["mp3"]
input = "{input}"
outdir = "{outdir}"
query = ["genre=Jazz", "year>=1990", "-albumtype=audiobook"]
exclude = "Spoken"
copy = true
"""


def selection_library(root: Path) -> None:
    jazz = {"GENRE": ["Bebop", "Jazz"], "DATE": "1995-02-01"}
    make_flac(root / "Jazz" / "a.flac", seconds=0.15, tags={**jazz, "TITLE": "a"})
    make_flac(root / "Jazz" / "b.flac", seconds=0.15, tags={**jazz, "TITLE": "b", "DATE": "2001"})
    make_flac(root / "Old" / "old.flac", seconds=0.15, tags={**jazz, "TITLE": "old", "DATE": "1959"})
    for folder in ("Jazz", "Old"):
        (root / folder / "cover.jpg").write_bytes(b"a cover")  # copied with the folder's FLACs, or not at all
    make_flac(root / "Jazz" / "book.flac", seconds=0.15, tags={**jazz, "ALBUMTYPE": "Audiobook"})
    make_flac(root / "Mixed" / "c.flac", seconds=0.15, tags={"GENRE": "jazz", "DATE": "1990", "TITLE": "c"})
    make_flac(root / "Mixed" / "rock.flac", seconds=0.15, tags={"GENRE": "Rock", "DATE": "1999"})
    make_flac(root / "Spoken" / "Jazz talk.flac", seconds=0.15, tags=jazz)  # excluded by its folder


def converted(outdir: Path) -> set[str]:
    return {p.relative_to(outdir / "mp3").as_posix() for p in (outdir / "mp3").rglob("*.mp3")}


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_profile_with_a_query_and_an_exclude_converts_exactly_the_chosen_sources(tmp_path, monkeypatch, streamed):
    """Planned whole, and (``streamed``) as the walk goes: a first run
    folder by folder, a re-run as a mirror."""
    if streamed:
        monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", "1")
    root, out = tmp_path / "in", tmp_path / "out"
    selection_library(root)
    config = tmp_path / "profiles.toml"
    config.write_text(PROFILE.format(input=root, outdir=out))
    profile = ("--config", config, "--profile", "car")
    plan = tmp_path / "plan.json"
    dry = run_flac2all(*profile, "--dry-run", "--plan-json", plan)
    assert dry.returncode == 0, dry.stderr
    shown = json.loads(plan.read_text())
    assert shown["selection"]["query"] == ["genre=Jazz", "year>=1990", "-albumtype=audiobook"]
    assert shown["selection"]["exclude"] == ["Spoken"]
    assert sorted(Path(p).name for p in shown["selection"]["unselected"]) == ["book.flac", "old.flac", "rock.flac"]
    assert sorted(Path(e["source"]).name for e in shown["actions"]["encode"]) == ["a.flac", "b.flac", "c.flac"]

    first = run_flac2all(*profile)
    assert first.returncode == 0, first.stdout + first.stderr
    assert converted(out) == {"Jazz/a.mp3", "Jazz/b.mp3", "Mixed/c.mp3"}
    assert sorted(Path(r["infile"]).name for r in read_log(out)) == ["a.flac", "b.flac", "c.flac", "cover.jpg"]
    assert (out / "mp3" / "Jazz" / "cover.jpg").is_file() and not (out / "mp3" / "Old").exists()

    # A tag edit takes b out of the selection: its output is an orphan, kept.
    f = FLAC(root / "Jazz" / "b.flac")
    f["GENRE"] = "Rock"
    f.save()
    second = run_flac2all(*profile)
    assert second.returncode == 0, second.stdout + second.stderr
    statuses = {Path(r["outfile"]).name: r["conversion_status"] for r in read_log(out)}
    # (Its source is still there: the log does not say it is gone.)
    assert statuses["b.mp3"] == f"SUCCESS ({SOURCE_HERE})" and "source here" in SOURCE_HERE
    assert statuses["a.mp3"] == statuses["c.mp3"] == "SUCCESS (skipped: up to date)"
    assert converted(out) == {"Jazz/a.mp3", "Jazz/b.mp3", "Mixed/c.mp3"}
    # With --delete it goes; the others stay as they are.
    third = run_flac2all(*profile, "--delete")
    assert third.returncode == 0, third.stdout + third.stderr
    assert converted(out) == {"Jazz/a.mp3", "Mixed/c.mp3"}
    assert {r["conversion_status"] for r in read_log(out) if Path(r["outfile"]).name == "b.mp3"} == {
        "SUCCESS (deleted orphan)"
    }
    # The command line's own --include narrows the profile's selection: c leaves it (kept, not deleted).
    fourth = run_flac2all(*profile, "--include", "Jazz")
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert converted(out) == {"Jazz/a.mp3", "Mixed/c.mp3"}
    assert {Path(r["outfile"]).name: r["conversion_status"] for r in read_log(out)}["c.mp3"].startswith(
        "SUCCESS (orphan"
    )


def test_a_profile_key_of_the_selection_is_checked(tmp_path):
    config = tmp_path / "profiles.toml"
    config.write_text('[profile.car]\nmodes = ["mp3"]\ninput = "in"\nquery = ["genre"]\n')
    result = run_flac2all("--config", config, "--profile", "car")
    assert result.returncode == 2 and "line 4" in result.stderr and "not a query" in result.stderr
    config.write_text('[profile.car]\nmodes = ["mp3"]\ninput = "in"\nexclude = [1]\n')
    result = run_flac2all("--config", config, "--profile", "car")
    assert result.returncode == 2 and "must be a string or a list of strings" in result.stderr


@pytest.mark.slow
def test_outputs_of_sources_a_glob_leaves_out_are_not_another_runs_orphans(tmp_path):
    """Two runs into one OUTDIR in different modes, one of them excluding a
    folder: its sources are not walked, yet neither missing (the input's
    guard finds them on disk) nor gone (the other mode's outputs stay,
    even with --delete)."""
    root, out = tmp_path / "in", tmp_path / "out"
    make_flac(root / "Jazz" / "a.flac", seconds=0.15, tags={"TITLE": "a"})
    for name in ("r", "s", "t"):
        make_flac(root / "Rock" / f"{name}.flac", seconds=0.15, tags={"TITLE": name})
    assert run_flac2all("opus", "-o", out, "-q", root).returncode == 0
    narrowed = run_flac2all("mp3", "-o", out, "--exclude", "Rock", "--delete", root)
    assert narrowed.returncode == 0, narrowed.stdout + narrowed.stderr
    assert {Path(r["outfile"]).name for r in read_log(out)} == {"a.mp3"}
    assert len(list((out / "opus" / "Rock").glob("*.opus"))) == 3
    assert [p.name for p in (out / "mp3").rglob("*.mp3")] == ["a.mp3"]
