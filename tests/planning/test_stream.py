"""A first run planned as the walk goes (``flac2all.planning.stream``): its first
encoder starts while the walk still has folders to list, and its log,
state, summary and exit status are those of the same run planned whole.

``FLAC2ALL_STREAM_AFTER`` sets how many sources are walked before a run
streams (1 here: every test library streams; a million: none does).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
from pathlib import Path

import mutagen.flac
import pytest

from flac2all.state import State
from tests.conftest import BASIC_TAGS, decodes, make_flac, read_log, run_flac2all, temp_files
from tests.face.test_display import run_on_terminal
from tests.running.test_full_disk import FILLING, full_disk_status
from tests.running.test_interruption import alive, slow_opusenc, start, wait_for

STREAM = "1"
WHOLE = "1000000"


def converted(out: Path, stream_after: str, monkeypatch: pytest.MonkeyPatch, *args, path_prefix=None):
    monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", stream_after)
    return run_flac2all(*args, "-o", out, path_prefix=path_prefix)


def unblocking_lame(fake_bin, fifo: Path, out: Path) -> Path:
    """A lame that, the first time it encodes an output (a temp name, in
    ``out`` or through a descriptor of its folder), opens ``fifo`` for
    writing (and closes it), then encodes for real."""
    marker = fifo.parent.parent.parent.parent / "first-encode"
    return fake_bin(
        "lame",
        f"""
case "$*" in *.flac2all-tmp-*)
    if [ ! -e "{marker}" ]; then touch "{marker}"; : > "{fifo}"; fi;;
esac
exec {shutil.which("lame")} "$@"
""",
    )


def test_the_first_encoder_starts_before_the_walk_ends(tmp_path, fake_bin, monkeypatch):
    """The last folder's planning cannot end before an encoder has started:
    an output already there for its source is a FIFO, which the planner
    opens to read its provenance tag, and which blocks until a writer comes;
    the only writer is the first real encoder (a whole plan would wait
    forever). The run then ends as any: that output is encoded over."""
    root = tmp_path / "music"
    for album in ("A 1", "A 2", "zzz"):
        make_flac(root / album / "01 one.flac", tags=BASIC_TAGS)
    out = tmp_path / "out"
    fifo = out / "mp3" / "zzz" / "01 one.mp3"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    os.utime(fifo, ns=(0, 0), follow_symlinks=False)  # older than its source: re-encoded
    shims = unblocking_lame(fake_bin, fifo, out)
    run = converted(out, STREAM, monkeypatch, "mp3", "-t", "1", root, path_prefix=shims)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "planning goes on while converting" in run.stdout
    assert "Planned: 3 task(s) in all" in run.stdout
    assert [r["conversion_status"] for r in read_log(out)] == ["SUCCESS"] * 3
    assert fifo.is_file() and decodes(fifo)


def comparable_rows(out: Path) -> list[tuple]:
    """The log's rows with OUTDIR as a name and no times."""
    rows = []
    for r in read_log(out):
        output = r["outfile"].replace(str(out), "OUT")
        rows.append(
            (r["infile"], output, r["format"], r["conversion_status"].replace(str(out), "OUT"), r["return_code"])
        )
    return rows


def comparable_state(out: Path, root: Path) -> list[tuple]:
    with State(out, root, readonly=True) as state:
        records = state.load()
    return sorted(
        (
            str(rec.output.relative_to(out)),
            str(rec.source),
            rec.mode,
            rec.facts,
            rec.settings_hash,
            rec.out_size,
            rec.art,
        )
        for rec in records.values()
    )


def summary(stdout: str, out: Path) -> list[str]:
    """The summary's lines that are not times, with OUTDIR as a name."""
    start = stdout.index("Total files on input")
    lines = stdout[start:].replace(str(out), "OUT").splitlines()
    return [line for line in lines if "time" not in line]


def mixed_library(tmp_path: Path) -> tuple[Path, Path]:
    """Folders with subfolders between their files, two sources with one
    output (refused), a dangling link (a failed task), copies and a cover,
    a copy whose name is a FLAC's output (the FLAC's); and an earlier
    mirror of its folder Old in mp3,opus: (the library, that mirror)."""
    root = tmp_path / "music"
    make_flac(root / "a.flac", tags=BASIC_TAGS)
    (root / "a.mp3").write_bytes(b"not the FLAC's mp3")  # its copy would land on a.flac's output
    make_flac(root / "b" / "1.flac", tags={"TITLE": "b1"})
    make_flac(root / "c.flac", seconds=0.2, tags={"TITLE": "c"})
    make_flac(root / "Album" / "x.flac", tags={"TITLE": "x"})
    make_flac(root / "Album" / "x.FLAC", tags={"TITLE": "X"})
    (root / "Album" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "Album" / "gone.flac").symlink_to(tmp_path / "nowhere.flac")
    make_flac(root / "Old" / "kept.flac", tags={"TITLE": "kept"})
    earlier = tmp_path / "earlier"
    first = run_flac2all("mp3,opus", "-o", earlier, root / "Old")
    assert first.returncode == 0, first.stdout
    return root, earlier


def outputs_without_state(earlier: Path, out: Path) -> None:
    """OUTDIR with the earlier mirror's outputs of Old, and no state: the
    outputs are adopted by their provenance tags."""
    for mode in ("mp3", "opus"):
        shutil.copytree(earlier / mode, out / mode / "Old")


@pytest.mark.slow
def test_streamed_run_is_the_whole_plans_run(tmp_path, monkeypatch):
    """A library with every kind of folder (``mixed_library``) and outputs
    adopted by their provenance tags (state rows without work): the same
    log, state, summary and exit status."""
    root, earlier = mixed_library(tmp_path)
    runs = {}
    for name, stream_after in (("streamed", STREAM), ("whole", WHOLE)):
        out = tmp_path / name
        outputs_without_state(earlier, out)
        runs[name] = converted(out, stream_after, monkeypatch, "mp3,opus", "-c", root)
    streamed, whole = runs["streamed"], runs["whole"]
    assert streamed.returncode == whole.returncode == 1  # the dangling link fails
    assert "planning goes on while converting" in streamed.stdout
    assert "planning goes on" not in whole.stdout
    assert comparable_rows(streamed.outdir) == comparable_rows(whole.outdir)
    assert comparable_state(streamed.outdir, root) == comparable_state(whole.outdir, root)
    assert summary(streamed.stdout, streamed.outdir) == summary(whole.stdout, whole.outdir)
    statuses = [r[3] for r in comparable_rows(streamed.outdir)]
    assert any("has the same output" in s for s in statuses)
    assert any("skipped" in s for s in statuses)


def listed(stdout: str) -> tuple[dict[str, int], collections.Counter, dict[str, list[str]]]:
    """A dry run's listing: its counts, its lines under the action heading
    each comes after (refusals as themselves), and each action's sources
    in the order listed."""
    counts: dict[str, int] = {}
    files: collections.Counter = collections.Counter()
    sources: dict[str, list[str]] = {}
    heading = None
    for line in stdout.splitlines()[1:]:
        count = re.fullmatch(r"  (\w+) +(\d+)", line)
        if count and heading in (None, "counts"):
            counts[count[1]] = int(count[2])
        elif line.startswith("refused: "):
            files["refused", line] += 1
        elif not line.startswith(" ") and line.endswith(":"):
            heading = line[:-1]
        elif not line.startswith("  ("):
            files[heading, line] += 1
            sources.setdefault(heading, []).append(line[11:].split(": ", 1)[0])
    return counts, files, sources


@pytest.mark.slow
def test_a_streamed_dry_run_lists_the_whole_plan_in_the_order_of_the_walk(tmp_path, monkeypatch):
    """Past the threshold, with no state, a dry run is planned and listed
    folder by folder: the same files under the same actions, refusals and
    counts as the whole plan's listing (counts at the end, each action's
    files in the order of the walk), and still nothing written."""
    root, earlier = mixed_library(tmp_path)
    runs = {}
    for name, stream_after in (("streamed", STREAM), ("whole", WHOLE)):
        out = tmp_path / name
        outputs_without_state(earlier, out)
        before = sorted(out.rglob("*"))
        runs[name] = converted(out, stream_after, monkeypatch, "mp3,opus", "-c", "--dry-run", root)
        assert runs[name].returncode == 0, runs[name].stderr
        assert sorted(out.rglob("*")) == before
    streamed, whole = (listed(runs[name].stdout.replace(str(tmp_path / name), "OUT")) for name in runs)
    assert streamed[:2] == whole[:2]
    counts = streamed[0]
    assert counts["encode"] > 0 and counts["refused"] > 0 and counts.get("skip", 0) + counts.get("retag", 0) > 0
    assert "folder by folder" in runs["streamed"].stdout and "folder by folder" not in runs["whole"].stdout
    assert runs["streamed"].stdout.splitlines()[-1 - len(streamed[0])] == "counts:"
    for action, sources in streamed[2].items():
        walked = [Path(s) for s in sources]  # (listed below INPUTDIR)
        assert walked == sorted(walked, key=lambda p: (p.parent.parts, p.name)), action


@pytest.mark.slow
def test_a_mirror_with_state_is_planned_whole(tmp_path, monkeypatch):
    """A second run has a state: a source moved to another folder is a move
    (which needs the whole walk), not an encode, even when the library is
    past the threshold."""
    root = tmp_path / "music"
    for i in range(4):
        make_flac(root / "Album" / f"{i}.flac", tags={"TITLE": f"t{i}"})
    out = tmp_path / "out"
    assert converted(out, STREAM, monkeypatch, "mp3", root).returncode == 0
    (root / "Other").mkdir()
    os.rename(root / "Album" / "3.flac", root / "Other" / "3.flac")
    rerun = converted(out, STREAM, monkeypatch, "mp3", root)
    assert rerun.returncode == 0, rerun.stdout
    assert "planning goes on" not in rerun.stdout
    statuses = sorted(r["conversion_status"] for r in read_log(out))
    assert len(statuses) == 4 and "moved from" in statuses[0] and statuses[1:] == ["SUCCESS (skipped: up to date)"] * 3


def changed_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, root: Path) -> Path:
    """A mirror of ``root`` made by a whole plan, in OUTDIR ``name``."""
    out = tmp_path / name
    first = converted(out, WHOLE, monkeypatch, "mp3,opus", "-c", root)
    assert first.returncode == 1, first.stdout  # the dangling link
    return out


@pytest.mark.slow
@pytest.mark.parametrize("options", [(), ("--delete", "--delete-anyway", "--allow-missing-sources")])
def test_a_mirror_planned_folder_by_folder_is_the_whole_plans_rerun(tmp_path, monkeypatch, options):
    """A re-run of a mirror past the threshold is planned folder by folder
    (its state read a folder at a time, its skips kept on disk): after a
    retag, an album moved, an album gone and a new one, its dry-run
    listing, log, state, summary and exit status are the whole plan's."""
    root, _ = mixed_library(tmp_path)
    outs = {name: changed_mirror(tmp_path, monkeypatch, name, root) for name in ("streamed", "whole")}
    retag = mutagen.flac.FLAC(root / "c.flac")
    retag["TITLE"] = "c, retagged"
    retag.save()
    os.rename(root / "b", root / "b moved")
    shutil.rmtree(root / "Old")
    make_flac(root / "New" / "n.flac", tags={"TITLE": "n"})
    runs, dry = {}, {}
    for name, stream_after in (("streamed", STREAM), ("whole", WHOLE)):
        out = outs[name]
        dry[name] = converted(out, stream_after, monkeypatch, "mp3,opus", "-c", "--dry-run", *options, root)
        runs[name] = converted(out, stream_after, monkeypatch, "mp3,opus", "-c", *options, root)
    for name in dry:
        dry[name] = (
            dry[name].returncode,
            dry[name].stdout.replace(str(outs[name]), "OUT"),
            dry[name].stderr.replace(str(outs[name]), "OUT"),
        )
    assert dry["streamed"] == dry["whole"]
    assert "move" in dry["whole"][1] and "retag" in dry["whole"][1]
    streamed, whole = runs["streamed"], runs["whole"]
    assert streamed.returncode == whole.returncode == 1  # the dangling link still fails
    assert "planning goes on" not in streamed.stdout
    assert comparable_rows(streamed.outdir) == comparable_rows(whole.outdir)
    assert comparable_state(streamed.outdir, root) == comparable_state(whole.outdir, root)
    assert summary(streamed.stdout, streamed.outdir) == summary(whole.stdout, whole.outdir)
    statuses = " ".join(r[3] for r in comparable_rows(whole.outdir))
    assert "moved from" in statuses and "retagged" in statuses
    assert ("deleted" in statuses) == bool(options)


@pytest.mark.slow
def test_sigterm_during_a_streamed_run(tmp_path, fake_bin, monkeypatch):
    """The interrupt's guarantees hold while the walk goes on: encoders
    stopped, temps removed, the log written, the state only of outputs that
    exist; the next run finishes the rest."""
    root = tmp_path / "in"
    for i in range(6):
        make_flac(root / f"album {i}" / f"{i}.flac", seconds=0.3)
    markers = tmp_path / "markers"
    out = tmp_path / "out"
    monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", STREAM)
    proc = start(root, out, slow_opusenc(fake_bin, markers))
    wait_for(lambda: len(list(markers.iterdir())) >= 1 and temp_files(out))
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stdout + stderr
    assert "Interrupted" in stdout
    assert temp_files(out) == []
    rows = read_log(out)
    assert all(r["conversion_status"] == "SUCCESS" and r["format"] == "vorbis" for r in rows)
    for marker in markers.iterdir():
        assert not alive(int(marker.name))
    with State(out, root, readonly=True) as state:
        assert all(output.exists() for output in state.load())
    rerun = run_flac2all("opus,vorbis", "-o", out, root)
    assert rerun.returncode == 0, rerun.stdout
    made = [*out.rglob("*.opus"), *out.rglob("*.ogg")]
    assert len(made) == 12 and all(decodes(output) for output in made)


def test_the_terminal_shows_that_planning_goes_on(tmp_path, monkeypatch):
    """The live line's first frame, drawn while the walk still has folders
    to plan, says so (and gives no ETA); the count ends at the whole total."""
    root = tmp_path / "music"
    for album in ("A 1", "A 2", "A 3"):
        make_flac(root / album / "01 one.flac", tags=BASIC_TAGS)
    monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", STREAM)
    code, screen = run_on_terminal(["opus", "-o", str(tmp_path / "out"), str(root)], 30, 120)
    assert code == 0, screen
    assert "Converting (planning)" in screen
    assert "3/3" in screen


@pytest.fixture
def small_disk(tmpfs) -> Path:
    """Room for about one output, the state and the log (as tests/running/test_full_disk.py's)."""
    return tmpfs(400)


@pytest.mark.slow
def test_a_full_disk_halts_a_streamed_run_and_counts_what_was_not_started(tmp_path, small_disk, monkeypatch):
    """The run stops on the full disk; the folders not yet walked are
    planned (not run) so that the summary counts every task not started,
    as a whole plan's does; the log, set aside as the plan grew, is written."""
    root = tmp_path / "in"
    for i in range(6):
        make_flac(root / f"album {i}" / f"{i}.flac", seconds=FILLING["opus"])
    monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", STREAM)
    run = run_flac2all("opus", "-t", "1", "-o", small_disk, root, timeout=90)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "planning goes on while converting" in run.stdout
    rows = read_log(small_disk)
    failed = [r for r in rows if r["conversion_status"].startswith("ERROR")]
    not_started = [r for r in rows if r["conversion_status"].startswith("NOT STARTED: no space left")]
    assert len(failed) == 1 and len(rows) - len(not_started) <= 2, rows
    assert len(rows) == 6  # every task its row, those of the folders planned after the halt too
    assert re.fullmatch(full_disk_status(small_disk), failed[0]["conversion_status"])
    stopped = [line for line in run.stdout.splitlines() if "STOPPED after" in line]
    assert len(stopped) == 1 and f"{len(not_started)} task(s) not started" in stopped[0]
    assert "Total files on input: 6 FLAC files" in run.stdout
    assert temp_files(small_disk) == []


@pytest.mark.slow
def test_a_small_dry_run_warns_once_of_a_state_it_cannot_read(tmp_path, monkeypatch):
    """A dry run of a library below the threshold, whose state cannot be
    read, says so once (as 960e4db did): looking whether it could be
    streamed must not read the state a second time out loud."""
    root = tmp_path / "music"
    for i in range(3):
        make_flac(root / "Album" / f"{i}.flac", tags={"TITLE": f"t{i}"})
    out = tmp_path / "out"
    assert converted(out, WHOLE, monkeypatch, "mp3", root).returncode == 0
    (out / ".flac2all" / "state.sqlite").write_bytes(b"not a database" * 100)
    dry = converted(out, WHOLE, monkeypatch, "mp3", "--dry-run", root)
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr.count("cannot be read") == 1, dry.stderr
