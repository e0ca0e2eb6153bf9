"""The mirror's state and the report on their own: real SQLite files and
real CSV files in a temporary folder, no encoder."""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from flac2all import report as report_module
from flac2all.csvlog import CSV_HEADER
from flac2all.errors import ExitStatus
from flac2all.face.plain import PlainDisplay
from flac2all.lines import SOURCE_HERE, line_for
from flac2all.model import Action, SourceFacts, Status, Task, TaskResult
from flac2all.records import Record, Records
from flac2all.report import Counts, Report
from flac2all.skips import Skip
from flac2all.state import SCHEMA_VERSION, State, StateError, state_path
from tests.conftest import run_flac2all


def record(out: Path, src: Path, name: str, size: int = 5) -> Record:
    facts = SourceFacts(size, 123, "ab" * 16, "t" * 32, "p" * 32)
    return Record.made(
        out / "mp3" / f"{name}.mp3",
        src / f"{name}.flac",
        "mp3",
        facts,
        "h" * 16,
        SimpleNamespace(st_size=size * 10, st_mtime_ns=456),
    )


def test_state_keeps_rows_across_runs_and_forgets_on_request(tmp_path: Path):
    out, src = tmp_path / "out", tmp_path / "music"
    odd = os.fsdecode(b"caf\xe9 \xff")  # a name that is not UTF-8
    with State(out, src) as state:
        for name in ("one", "two", odd):
            state.put(record(out, src, name))
    with State(out, src) as state:
        rows = state.load()
        assert set(rows) == {out / "mp3" / f"{n}.mp3" for n in ("one", "two", odd)}
        assert rows[out / "mp3" / f"{odd}.mp3"] == record(out, src, odd)
        state.forget(out / "mp3" / "two.mp3")
    with State(out, src, readonly=True) as state:
        assert set(state.load()) == {out / "mp3" / "one.mp3", out / "mp3" / f"{odd}.mp3"}


def test_loaded_rows_are_the_records_put_whether_asked_by_path_or_as_rows(tmp_path: Path):
    """``load`` keeps rows as text and makes Records only when asked: the
    same Records, lookups and sources as a dict of them (``Records.of``)."""
    out, src = tmp_path / "out", tmp_path / "music"
    odd = os.fsdecode(b"caf\xe9 \xff")
    put = {r.output: r for r in (record(out, src, n) for n in ("one", odd))}
    with State(out, src) as state:
        for rec in put.values():
            state.put(rec)
    with State(out, src, readonly=True) as state:
        rows = state.load()
    for records in (rows, Records.of(put)):
        assert records == put and len(records) == 2 and dict(records.items()) == put
        one = out / "mp3" / "one.mp3"
        assert one in records and str(one) in records and out / "mp3" / "two.mp3" not in records
        assert records.get(out / "none.mp3") is None and records.get(one) == put[one]
        row = records.row(out / "mp3" / f"{odd}.mp3")
        assert row is not None and row.source == os.fspath(src / f"{odd}.flac")
        assert (row.out_size, row.out_mtime_ns, row.settings_hash) == (50, 456, "h" * 16)
        assert records.sources() == {os.fspath(src / "one.flac"), os.fspath(src / f"{odd}.flac")}
        assert list(records.unclaimed({os.fspath(one)})) == [put[out / "mp3" / f"{odd}.mp3"]]


def test_state_rows_are_relative_so_a_moved_mirror_keeps_its_state(tmp_path: Path):
    with State(tmp_path / "a", tmp_path / "music") as state:
        state.put(record(tmp_path / "a", tmp_path / "music", "one"))
    (tmp_path / "a").rename(tmp_path / "b")
    with State(tmp_path / "b", tmp_path / "music2") as state:
        [row] = state.load().values()
    assert (row.output, row.source) == (tmp_path / "b" / "mp3" / "one.mp3", tmp_path / "music2" / "one.flac")


def test_a_readonly_state_of_a_new_mirror_is_empty_and_creates_nothing(tmp_path: Path):
    with State(tmp_path / "new", tmp_path / "music", readonly=True) as state:
        assert state.load() == {}
    assert not (tmp_path / "new").exists()


def test_a_state_from_a_newer_flac2all_is_refused_with_advice(tmp_path: Path):
    with State(tmp_path, tmp_path / "music"):
        pass
    db = sqlite3.connect(state_path(tmp_path))
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer flac2all .* delete it"):
        State(tmp_path, tmp_path / "music")


def test_record_compares_the_output_and_source_it_was_made_from(tmp_path: Path):
    rec = record(tmp_path, tmp_path, "one")
    assert rec.output_is(SimpleNamespace(st_size=50, st_mtime_ns=456))
    assert not rec.output_is(SimpleNamespace(st_size=51, st_mtime_ns=456))
    assert not rec.output_is(None)
    assert rec.source_is(5, 123) and not rec.source_is(5, 124)


def result(action: Action, status: Status, name: str = "a", mode: str = "mp3", elapsed: float = 1.0) -> TaskResult:
    task = Task(Path(f"/music/{name}.flac"), mode, Path(f"/out/{mode}/{name}.{mode}"), action)
    message = "boom" if status is Status.FAILED else ""
    return TaskResult(task, status, message, 1 if status is Status.FAILED else 0, elapsed)


EVERY_ACTION = [
    result(Action.ENCODE, Status.SUCCESS, "e1", elapsed=2.0),
    result(Action.ENCODE, Status.SUCCESS, "e2", mode="opus", elapsed=4.0),
    result(Action.ENCODE, Status.FAILED, "e3", elapsed=6.0),
    result(Action.RETAG, Status.SUCCESS, "r"),
    result(Action.MOVE, Status.SUCCESS, "m"),
    result(Action.COPY, Status.SUCCESS, "c"),
    result(Action.DELETE, Status.SUCCESS, "d"),
    result(Action.SKIP, Status.SKIPPED, "s1"),
    result(Action.SKIP, Status.SKIPPED, "s2"),
    result(Action.ORPHAN, Status.SKIPPED, "o"),
    result(Action.COPY, Status.FAILED, "cf"),
]


def test_counts_add_up_each_task_counted_once():
    c = Counts.of(EVERY_ACTION)
    assert c.total == len(EVERY_ACTION) == c.failed + sum(c.done.values())
    assert c.failed == 2
    assert c.done == {
        Action.ENCODE: 2,
        Action.COPY: 1,
        Action.SKIP: 2,
        Action.RETAG: 1,
        Action.MOVE: 1,
        Action.DELETE: 1,
        Action.ORPHAN: 1,
        Action.CONVERT: 0,
        Action.PLAYLIST: 0,
    }
    assert c.encode_times == {"mp3": [2.0, 6.0], "opus": [4.0]}


def test_the_summary_says_what_the_counts_say():
    report = Report(modes=("mp3", "opus"), sources=9, issued=len(EVERY_ACTION), results=list(EVERY_ACTION))
    text = report.summary()
    assert "Total files on input: 9 FLAC files (11 tasks in 2 modes)" in text
    assert "Total files actually processed: 11 tasks" in text
    assert "Files we managed to convert successfully: 2 tasks" in text
    assert "Files we failed to convert due to errors: 2 tasks" in text
    # Every task once: orphans are not "skipped", and 2+1+1+1+1+2+1+2 = 11.
    assert (
        "Tasks by action: 2 encoded, 1 retagged, 1 moved, 1 copied, 2 skipped, 1 orphan kept, 1 orphan deleted,"
        " 2 failed" in text
    )
    assert "For mode: mp3\n        Total execution time: 8.0000 seconds" in text  # 2 + 6, the failed one too
    assert report.exit_status is ExitStatus.FAILURES


def test_a_cluster_summary_lists_each_host_or_says_none_finished():
    ok = [
        TaskResult(Task(Path(f"{i}.flac"), "mp3", Path(f"{i}.mp3"), Action.ENCODE), Status.SUCCESS, "", 0, 1.0)
        for i in range(3)
    ]
    ok[0] = TaskResult(ok[0].task, Status.FAILED, "bad", 1, 1.0, host="node2")
    ok[1] = TaskResult(ok[1].task, Status.SUCCESS, "", 0, 1.0, host="node1")
    ok[2] = TaskResult(ok[2].task, Status.SUCCESS, "", 0, 1.0, host="node1")
    report = Report(modes=("mp3",), issued=3, results=ok, by_host=True, host_problems={"node3": "unhealthy: x"})
    text = report.summary()
    assert "By host:\n        node1: 2 done, 0 failed\n        node2: 0 done, 1 failed\n        node3: 0 done" in text
    assert "node3: 0 done, 0 failed; unhealthy: x" in text
    # Ctrl-C before any result: not a heading with nothing under it.
    stopped = Report(modes=("mp3",), issued=3, results=[], by_host=True, interrupted_by=2).summary()
    assert "By host: no task finished" in stopped and "By host:\n" not in stopped


def test_exit_status_for_success_missing_results_and_interruption():
    ok = [r for r in EVERY_ACTION if r.status is not Status.FAILED]
    assert Report(modes=("mp3",), issued=len(ok), results=list(ok)).exit_status is ExitStatus.OK
    assert Report(modes=("mp3",), issued=len(ok) + 1, results=list(ok)).exit_status is ExitStatus.FAILURES
    stopped = Report(modes=("mp3",), issued=len(ok) + 1, results=list(ok), interrupted_by=15)
    assert stopped.exit_status is ExitStatus.SIGTERM
    assert "1 task(s) did not run" in stopped.summary()


def test_the_log_is_csv_that_survives_hostile_names(tmp_path: Path):
    hostile = 'a, "quoted"\nsecond line'
    results = [result(Action.ENCODE, Status.SUCCESS, hostile), result(Action.ENCODE, Status.FAILED, "b")]
    report = Report(modes=("mp3",), issued=2, results=results)
    report.write_csv(tmp_path / "conversion_results.log")
    with open(tmp_path / "conversion_results.log", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1][0] == f"/music/{hostile}.flac" and rows[1][3] == "SUCCESS"
    assert rows[2][3] == "ERROR: boom" and rows[2][4] == "1"
    assert report.log_path == tmp_path / "conversion_results.log"
    assert [p.name for p in tmp_path.iterdir()] == ["conversion_results.log"]


def test_each_action_prints_its_own_verb_naming_what_it_did():
    def line(action: Action, status: Status = Status.SUCCESS, message: str = "", previous: str | None = None) -> str:
        task = Task(Path("/music/a.flac"), "mp3", Path("/out/mp3/a.mp3"), action, previous=previous and Path(previous))
        return line_for(TaskResult(task, status, message))

    assert line(Action.ENCODE) == "encoded  mp3      /music/a.flac -> /out/mp3/a.mp3"
    assert line(Action.COPY).startswith("copied   mp3      /music/a.flac -> ")
    assert line(Action.RETAG) == "retagged mp3      /out/mp3/a.mp3"
    assert line(Action.MOVE, previous="/out/mp3/old.mp3") == "moved    mp3      /out/mp3/a.mp3 (from /out/mp3/old.mp3)"
    # A deletion names the file it deleted, not a source it converted.
    assert line(Action.DELETE) == "deleted  mp3      /out/mp3/a.mp3 (orphan: its source is gone, deleted)"
    # An orphan whose source is still there (split by its CUE sheet, out of the selection) is not said gone.
    orphan = Task(Path("/music/a.flac"), "mp3", Path("/out/mp3/a.mp3"), Action.ORPHAN, note=SOURCE_HERE)
    assert line_for(TaskResult(orphan, Status.SKIPPED, SOURCE_HERE)) == (
        "kept     mp3      /out/mp3/a.mp3 (orphan: its source is here but no longer makes it, kept; "
        "--delete removes it)"
    )
    assert line(Action.ORPHAN, Status.SKIPPED).startswith("kept     mp3      /out/mp3/a.mp3 (orphan")
    assert line(Action.SKIP, Status.SKIPPED, "skipped: up to date") == ("skipped  mp3      /out/mp3/a.mp3 (up to date)")
    assert line(Action.ENCODE, Status.FAILED, "boom") == "FAILED   mp3      /music/a.flac: boom"


def test_each_action_is_counted_under_the_verb_its_lines_start_with():
    """A scaled cover and a lossy file re-encoded are both "converted", in
    their lines and in the summary; a playlist is "written", one or more;
    the device actions come with what they are like, orphans last."""

    def done(action: Action, message: str, name: str) -> TaskResult:
        task = Task(Path(f"/music/{name}"), "mp3", Path(f"/out/mp3/{name}"), action)
        return TaskResult(task, Status.SUCCESS, message)

    cover = done(Action.CONVERT, "scaled to 500x500", "cover.jpg")
    lossy = done(Action.CONVERT, "converted", "a.ogg")
    playlist = done(Action.PLAYLIST, "playlist written", "a.m3u")
    assert line_for(cover) == "converted mp3      /music/cover.jpg -> /out/mp3/cover.jpg (scaled to 500x500)"
    assert line_for(lossy) == "converted mp3      /music/a.ogg -> /out/mp3/a.ogg"
    assert line_for(playlist).startswith("written  mp3      /music/a.m3u -> ")
    results = [*EVERY_ACTION, cover, lossy, playlist]
    text = Report(modes=("mp3", "opus"), issued=len(results), results=results).summary()
    assert (
        "Tasks by action: 2 encoded, 2 converted, 1 retagged, 1 moved, 1 copied, 1 playlist written, 2 skipped,"
        " 1 orphan kept, 1 orphan deleted, 2 failed" in text
    )


def test_outputs_kept_as_skips_log_summarise_and_show_as_their_results_would(tmp_path: Path):
    """A no-op re-run keeps its up-to-date outputs as text (``Skip``), never
    as TaskResults: its CSV log, summary, exit status and plain lines are
    what the same skips as results give, among other results and with
    names that are not UTF-8."""
    odd = os.fsdecode(b"caf\xe9 \xff")
    skips = [
        Skip(f"/music/{name}.flac", f"/out/{mode}/{name}.{mode}", mode, 1.0)
        for name in ("z", odd, 'a, "quoted"', "e1")
        for mode in ("opus", "mp3")
    ]
    others = [r for r in EVERY_ACTION if r.task.source.name != "s1.flac"]
    compact = Report(modes=("mp3", "opus"), sources=5, issued=len(others) + len(skips), results=list(others))
    compact.add_skipped(skips, "here")
    whole = Report(modes=("mp3", "opus"), sources=5, issued=compact.issued)
    whole.results = [*others, *(s.result("here") for s in skips)]
    assert compact.every_result() == whole.results
    for report, name in ((compact, "compact.log"), (whole, "whole.log")):
        report.write_csv(tmp_path / name)
    assert (tmp_path / "compact.log").read_bytes() == (tmp_path / "whole.log").read_bytes()
    assert compact.summary().replace("compact.log", "whole.log") == whole.summary()
    assert compact.exit_status == whole.exit_status and compact.complete
    by_host = Report(modes=("mp3",), issued=len(skips), by_host=True)
    by_host.add_skipped(skips, "here")
    assert "By host:\n        here: 8 done, 0 failed" in by_host.summary()
    shown, one_by_one = io.StringIO(), io.StringIO()
    PlainDisplay(shown).skipped(skips)
    for s in skips:
        PlainDisplay(one_by_one).finished(s.result("here"))
    assert shown.getvalue() == one_by_one.getvalue() and shown.getvalue().count("\n") == len(skips)


def test_a_report_past_what_it_keeps_logs_and_sums_up_the_same(tmp_path: Path, monkeypatch):
    """Past ``report.KEPT`` results, the later ones are kept as CSV rows on
    disk and counts: the log, the summary, the failures and the exit
    status are those of a report that kept them all (hostile names, every
    action, failures among them)."""
    names = ["a,b", 'q"uote', "new\nline", "ünï", "-dash", "b\udcff"]
    results = [
        result(action, status, name, mode, float(n))
        for n, (action, status) in enumerate([(r.task.action, r.status) for r in EVERY_ACTION] * 2, start=1)
        for name, mode in [(names[n % len(names)], ("mp3", "opus")[n % 2])]
    ]
    made = {}
    for kept in (10**9, 3):
        monkeypatch.setattr(report_module, "KEPT", kept)
        report = Report(modes=("mp3", "opus"), sources=7, issued=len(results) + 1)
        report.add_skipped([Skip("/in/z.flac", "/out/mp3/z.mp3", "mp3", 1.0)], "host")
        for r in results:
            report.add(r)
        report.by_host = True
        log = tmp_path / f"log-{kept}.csv"
        report.write_csv(log)
        made[kept] = (log.read_bytes(), report.summary().replace(str(log), "LOG"), report.exit_status, report.failures)
        assert (report.row_log is not None) is (kept == 3)
    assert made[3] == made[10**9]
    rows = list(csv.reader(io.StringIO(made[3][0].decode("utf-8", "surrogateescape"), newline="")))
    assert len(rows) == 1 + len(results) + 1 and rows[0] == list(CSV_HEADER)
    assert made[3][2] == ExitStatus.FAILURES and made[3][3]


def test_a_state_that_cannot_open_on_a_full_disk_says_so_and_leaves_nothing(library, tmpfs):
    """OUTDIR's disk filled between two runs: the state cannot be opened
    for writing. SQLite's "disk I/O error" is one cause, the full disk, and
    the -wal/-shm files the failed open made are removed."""
    disk = tmpfs(1024)
    assert run_flac2all("mp3", "-q", "-o", disk, library, timeout=60).returncode == 0
    before = sorted(p.name for p in (disk / ".flac2all").iterdir())
    with open(disk / "filler", "wb") as f, pytest.raises(OSError):
        f.write(b"\0" * 2 * 1024 * 1024)
        f.flush()
    run = run_flac2all("mp3", "-f", "-o", disk, library, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    cause = rf"no space left on device \({re.escape(str(disk))}'s filesystem: 0\.0 MB free\)"
    assert re.fullmatch(rf"flac2all: error: cannot open the state in {re.escape(str(disk))}: {cause}\n", run.stderr)
    assert sorted(p.name for p in (disk / ".flac2all").iterdir()) == before
