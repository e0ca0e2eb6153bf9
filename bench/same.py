"""Same behaviour before and after a change: ``python -m bench same [--baseline REF]``.

Runs one set of scenarios (first run, no-op re-run, retag, move, delete,
dry runs, --plan-json, a device profile, a ZeroMQ cluster run, a Dask run, a
streamed first run) with two flac2all: this checkout's ``.venv`` and the one
at git REF (default e94c44b), installed once in a worktree and venv under
build/same/baseline-HASH. Both are run through their console scripts
(``flac2all``, ``flac2all_worker``), each on its own copy of one generated
library. What a user gets is compared step by step: exit status, stdout,
stderr, the CSV log, the state's ``outputs`` rows, the summary file, the
plan JSON and the output files (and their sizes), after
the normalisation in ``normalise`` (temp folders, times, host, ports, pids,
versions).

Prints ``same`` or ``DIFFERENT`` (with a bounded unified diff) per scenario;
exits 1 if any differs. ``--keep`` keeps the work folders, ``--only NAME``
runs some scenarios, ``--self`` runs the baseline against itself (to tell
nondeterminism in the tool from a change).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mutagen.flac import FLAC, Picture

from bench import library

REPO = library.ROOT.parent.parent
BUILD = REPO / "build" / "same"
DEFAULT_BASELINE = "e94c44b"
MODES = "mp3,opus,vorbis"
STEP_TIMEOUT = 90  # seconds, any one command
# Every source and folder of the generated library gets this mtime, and each
# change a later one, so that both versions see the same stat() results.
EPOCH = 1_700_000_000
DIFF_LINES = 80


@dataclass(frozen=True)
class Tool:
    """One flac2all to run: the bin folder of the venv it is installed in."""

    name: str
    bin: Path

    def exe(self, name: str) -> str:
        return str(self.bin / name)


def working_tree() -> Tool:
    """This checkout's flac2all, installed in its .venv (pip install -e)."""
    tool = Tool("working tree", REPO / ".venv" / "bin")
    if not Path(tool.exe("flac2all")).exists():
        raise SystemExit(f"no {tool.exe('flac2all')}: install this checkout with pip install -e '.[dask]' first")
    return tool


def baseline(ref: str) -> Tool:
    """flac2all at ``ref``: a git worktree with its own venv, made once per commit."""
    sha = git("rev-parse", "--short=12", f"{ref}^{{commit}}")
    folder = BUILD / f"baseline-{sha}"
    venv = folder / ".venv"
    if not (folder / ".git").exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", "--force", str(folder), sha)
    if not (venv / ".installed").exists():
        print(f"installing flac2all at {ref} ({sha}) into {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e", ".[dask]"]
        subprocess.run(pip, cwd=folder, check=True, timeout=900)
        (venv / ".installed").touch()
    return Tool(f"baseline {ref}", venv / "bin")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


# The library: three albums, loose files, a playlist; names with spaces,
# unicode and punctuation; one album with an embedded cover.
ALBUMS = {
    "Alpha Band/2001 - First Light": ["Dawn", "Noon"],
    "Zoë Keating/Été — à Paris": ["Café", "Naïve song", "Ça va"],
    "Gamma Ray/Live, at: the Hall": ["One = 1", "Two's"],
}


def make_library(root: Path) -> Path:
    """The scenarios' library, made once (sox, ffmpeg, mutagen) and reused."""
    marker = root / ".complete"
    if marker.exists():
        return root / "music"
    shutil.rmtree(root, ignore_errors=True)
    music = root / "music"
    seed = 0
    for album_no, (folder, titles) in enumerate(ALBUMS.items()):
        artist, album = folder.split("/")
        cover = music / folder / "cover.jpg"
        cover.parent.mkdir(parents=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "color=c=navy:s=64x64"]
            + ["-frames:v", "1", str(cover)],
            check=True,
            timeout=60,
        )
        for n, title in enumerate(titles, 1):
            seed += 1
            path = music / folder / f"{n:02d} {title}.flac"
            library.synth(path, 0.3, seed)
            f = FLAC(path)
            f.update(
                {
                    "TITLE": title,
                    "ARTIST": artist,
                    "ALBUM": album,
                    "TRACKNUMBER": str(n),
                    "DATE": "2001",
                    "GENRE": ["Electronic", "Test"],
                }
            )
            if album_no == 0:
                pic = Picture()
                pic.type, pic.mime, pic.desc, pic.data = 3, "image/jpeg", "front", cover.read_bytes()
                f.add_picture(pic)
            f.save()
    (music / "Alpha Band" / "2001 - First Light" / "liner notes.txt").write_text("notes\n")
    (music / "read me.txt").write_text("a library\n")
    (music / "mix.m3u8").write_text(
        "#EXTM3U\n#EXTINF:0,Dawn\nAlpha Band/2001 - First Light/01 Dawn.flac\n"
        "#EXTINF:0,Café\nZoë Keating/Été — à Paris/01 Café.flac\n"
    )
    settle(music, EPOCH)
    marker.touch()
    return music


def settle(path: Path, seconds: int) -> None:
    """Give ``path`` and everything under it the mtime ``seconds``."""
    for p in [path, *path.rglob("*")]:
        os.utime(p, ns=(seconds * 10**9, seconds * 10**9))


@dataclass
class Step:
    """One command of a scenario and what it gave."""

    argv: list[str]
    code: int | None
    stdout: str
    stderr: str
    extra: dict[str, str] = field(default_factory=dict)  # more output to compare (a worker's), by name


def bounded(argv: list[str], env: dict | None = None, timeout: float = STEP_TIMEOUT) -> Step:
    """Run ``argv`` to its end, at most ``timeout`` seconds (then its whole
    process group is killed and the step's code is None)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Step(argv, code, out.decode(errors="backslashreplace"), err.decode(errors="backslashreplace"))


class Live:
    """A background process whose stdout and stderr are read as they come."""

    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.decode(errors="backslashreplace"))

    def when(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in [*self.out, *self.err]:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not any(t.is_alive() for t in self.readers):
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {pattern!r} from {self.argv[0]} within {timeout} s:\n{''.join(self.out + self.err)}")

    def wait(self, timeout: float = STEP_TIMEOUT) -> Step:
        """Its step, once it ended (killed after ``timeout``: code None)."""
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        for t in self.readers:
            t.join(timeout=5)
        return Step(self.argv, code, "".join(self.out), "".join(self.err))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class Session:
    """One scenario run by one tool in its own folder: ``inp`` (a copy of
    the library), ``out``; each step's outcome is appended to ``document``."""

    def __init__(self, tool: Tool, work: Path, music: Path) -> None:
        self.tool, self.work = tool, work
        self.inp, self.out = work / "in", work / "out"
        shutil.copytree(music, self.inp)  # copy2: the mtimes too
        self.document: list[str] = []
        self.changes = 0

    def flac2all(self, *args: str, env: dict | None = None, plan: Path | None = None) -> Step:
        """``flac2all ARGS`` (``IN``/``OUT`` stand for the folders), recorded
        (with the JSON file ``plan`` if it writes one)."""
        step = bounded([self.tool.exe("flac2all"), *map(self.path, args)], env)
        self.record(step, plan)
        return step

    def path(self, arg: str) -> str:
        return {"IN": str(self.inp), "OUT": str(self.out)}.get(arg, arg)

    def record(self, step: Step, plan: Path | None = None) -> None:
        self.document.append(outcome({self.work: "<WORK>", self.tool.bin: "<BIN>"}, self.out, step, plan))

    def changed(self, *paths: Path) -> None:
        """Stamp what a change touched with the next fixed mtime."""
        self.changes += 1
        for p in paths:
            os.utime(p, ns=((EPOCH + 100 * self.changes) * 10**9,) * 2)


def outcome(roots: dict[Path, str], out: Path, step: Step, plan: Path | None = None) -> str:
    """What a user has after one step, as normalised text: the command,
    exit status, stdout, stderr, CSV log, state, summary, plan, files
    (``roots``: the folders to name by placeholders, see ``normalise``)."""
    parts = [
        f"$ {' '.join(step.argv)}",
        f"exit status: {step.code}",
        "-- stdout --",
        ordered(step.stdout),
        "-- stderr --",
        ordered(step.stderr),
    ]
    for name, text in step.extra.items():
        parts += [f"-- {name} --", ordered(text)]
    parts += ["-- log --", *csv_rows(out / "conversion_results.log")]
    parts += ["-- state --", *state_rows(out / ".flac2all" / "state.sqlite")]
    summary = out / ".flac2all" / "last-summary.txt"
    parts += ["-- summary --", summary.read_text(errors="backslashreplace") if summary.exists() else "(none)"]
    if plan is not None:
        parts += [
            "-- plan json --",
            plan_text(plan),
        ]
    parts += ["-- files --", *files(out)]
    return normalise("\n".join(parts), roots)


# The lines of one task's outcome, as a run prints them in the order its
# jobs end ("encoded  mp3      IN -> OUT"): order depends on the threads.
TASK_LINE = re.compile(r"^\S+(?: \S+)? +[a-z0-9]+ +\S")
# The actions whose files a plan lists in an order that is not the same
# every run: orphans tie on cost (copies of one file in several modes), and
# ties keep the order of the state's rows, which is the order the previous
# run's jobs ended in (``State.records`` selects without ORDER BY).
UNORDERED = ("orphan", "delete")


def ordered(text: str) -> str:
    """``text`` with each block of consecutive task lines sorted, and the
    files of the dry run's ``orphan:`` and ``delete:`` sections."""
    lines, block, result = text.splitlines(), [], []
    section = ""
    for line in [*lines, ""]:
        if TASK_LINE.match(line) and not line.startswith((" ", "|")):
            block.append(line)
            continue
        if section in UNORDERED and line.startswith("  "):
            block.append(line)
            continue
        result += sorted(block)
        block = []
        result.append(line)
        section = line[:-1] if re.fullmatch(r"[a-z]+:", line) else ""
    return "\n".join(result[:-1])


def plan_text(plan: Path) -> str:
    """The --plan-json file, its unordered actions sorted (see UNORDERED)."""
    if not plan.exists():
        return "(none)"
    data = json.loads(plan.read_text())
    for action in UNORDERED:
        data.get("actions", {}).get(action, []).sort(key=lambda entry: sorted(entry.items()))
    return json.dumps(data, indent=1, ensure_ascii=False)


def csv_rows(log: Path) -> list[str]:
    """The log's rows, execution_time dropped, in their order (flac2all
    sorts them: the same every run, whatever order the jobs ended in)."""
    if not log.exists():
        return ["(none)"]
    rows = list(csv.reader(io.StringIO(log.read_text(errors="backslashreplace"))))
    if not rows:
        return ["(empty)"]
    header, body = rows[0], rows[1:]
    drop = {header.index(c) for c in ("execution_time",) if c in header}
    keep = lambda row: [v for i, v in enumerate(row) if i not in drop]  # noqa: E731
    return [",".join(keep(header)), *(",".join(keep(r)) for r in body)]


def state_rows(db: Path) -> list[str]:
    """Every row of the state's ``outputs`` table, paths relative as it
    keeps them, out_mtime_ns dropped."""
    if not db.exists():
        return ["(none)"]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = con.execute("SELECT * FROM outputs ORDER BY output")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    lines = []
    for row in rows:
        row.pop("out_mtime_ns", None)
        for key in ("output", "source"):
            if isinstance(row.get(key), bytes):
                row[key] = os.fsdecode(row[key])
        lines.append(" | ".join(f"{k}={v}" for k, v in row.items()))
    return lines


def files(out: Path) -> list[str]:
    """The files under ``out``: relative path and size (the same encoder
    writes the same bytes from the same input and options: Ogg's random
    serial numbers do not change a size), the text of playlists; the log
    and .flac2all/ are compared above (the log's bytes hold times)."""
    if not out.exists():
        return ["(none)"]
    lines = []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if rel.parts[0] == ".flac2all":  # its lock and journal come and go
            continue
        if p.is_dir() or rel.name == "conversion_results.log":
            lines.append(f"{rel}/" if p.is_dir() else str(rel))
            continue
        lines.append(f"{rel} {p.stat().st_size}")
        if p.suffix in (".m3u", ".m3u8"):  # a playlist flac2all rewrote, or a copy
            lines += [f"  | {line}" for line in p.read_text(errors="backslashreplace").splitlines()]
    return lines


# What legitimately differs between two runs of one flac2all.
PATTERNS = [
    (re.compile(r"\d+(\.\d+)? ?(seconds|s|ms|min)\b"), "<T> \\2"),  # durations
    (re.compile(r"\b\d+:\d\d(:\d\d)?\b"), "<CLOCK>"),  # elapsed, ETA
    (re.compile(r"\d+(\.\d+)? ?(files|tasks|jobs)/s\b"), "<RATE>"),
    (re.compile(r"(127\.0\.0\.1|localhost):\d+"), "\\1:<PORT>"),
    (re.compile(r"\bpid \d+"), "pid <PID>"),
    (re.compile(r"--port \d+"), "--port <PORT>"),
    (re.compile(r"\b(flac2all(?:_worker)?) \d+\.\d+\S*"), "\\1 <VERSION>"),
    (re.compile(r"<HOST>:\d+"), "<HOST>:<ID>"),  # a worker: host and pid
    (re.compile(r"^.*\bElapsed\b.*$", re.M), "<ELAPSED LINE>"),
    # A worker process joins when it is up: how many have joined by the end
    # of a tiny run, and where among the master's lines, is timing.
    (re.compile(r"^Got \d+ worker\(s\) \(new: .*\n", re.M), ""),
]


def normalise(text: str, roots: dict[Path, str]) -> str:
    """``text`` with each folder of ``roots`` (and its real path) as its
    placeholder, the host name as ``<HOST>``, and times, clocks, rates,
    ports and pids as placeholders."""
    spelled = {spelling: name for root, name in roots.items() for spelling in (str(root), os.path.realpath(root))}
    for spelling in sorted(spelled, key=len, reverse=True):  # a folder before its parent
        text = text.replace(spelling, spelled[spelling])
    host = socket.gethostname()
    text = re.sub(rf"\b{re.escape(host)}\b", "<HOST>", text)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def compare(a: str, b: str, names: tuple[str, str]) -> list[str]:
    """A unified diff of ``a`` and ``b`` (empty when the same), at most
    DIFF_LINES lines."""
    diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), *names, lineterm="", n=2))
    if len(diff) > DIFF_LINES:
        diff = [*diff[:DIFF_LINES], f"... {len(diff) - DIFF_LINES} more lines of diff"]
    return diff


# The scenarios: each gets a Session and runs its steps.


def first(s: Session) -> None:
    s.flac2all(MODES, "-c", "-o", "OUT", "IN")


def noop(s: Session) -> None:
    first(s)
    s.flac2all(MODES, "-c", "-o", "OUT", "IN")


def retag_one(s: Session) -> None:
    path = s.inp / "Zoë Keating" / "Été — à Paris" / "02 Naïve song.flac"
    f = FLAC(path)
    f["TITLE"] = "Naïve song (edit)"
    f.save()
    s.changed(path)


def retag(s: Session) -> None:
    first(s)
    retag_one(s)
    s.flac2all(MODES, "-c", "-o", "OUT", "IN")


def move(s: Session) -> None:
    first(s)
    album = s.inp / "Gamma Ray" / "Live, at: the Hall"
    album.rename(album.with_name("Live at the Hall (remaster)"))
    s.changed(album.parent, album.with_name("Live at the Hall (remaster)"))
    s.flac2all(MODES, "-c", "-o", "OUT", "IN")


def remove_album(s: Session) -> None:
    album = s.inp / "Alpha Band" / "2001 - First Light"
    shutil.rmtree(album)
    s.changed(album.parent)


def delete(s: Session) -> None:
    """--delete, refused past 10% of the outputs, then with --delete-anyway."""
    first(s)
    remove_album(s)
    s.flac2all(MODES, "-c", "--delete", "-o", "OUT", "IN")
    s.flac2all(MODES, "-c", "--delete", "--delete-anyway", "-o", "OUT", "IN")


def keep(s: Session) -> None:
    first(s)
    remove_album(s)
    s.flac2all(MODES, "-c", "-o", "OUT", "IN")


def dry_first(s: Session) -> None:
    s.flac2all(MODES, "-c", "--dry-run", "-o", "OUT", "IN")


def dry_rerun(s: Session) -> None:
    first(s)
    retag_one(s)
    remove_album(s)
    s.flac2all(MODES, "-c", "--dry-run", "-o", "OUT", "IN")


def plan_json(s: Session) -> None:
    """--plan-json with a first run, then with a dry re-run after changes."""
    plan = s.work / "plan.json"
    s.flac2all(MODES, "-c", "--plan-json", str(plan), "-o", "OUT", "IN", plan=plan)
    retag_one(s)
    remove_album(s)
    s.flac2all(MODES, "-c", "--dry-run", "--plan-json", str(plan), "-o", "OUT", "IN", plan=plan)


def profile(s: Session) -> None:
    """A device profile with FAT32 names and playlists, run twice."""
    config = s.work / "config.toml"
    config.write_text(
        '[profile.stick]\nmodes = ["mp3", "opus"]\ninput = "in"\noutdir = "out"\n'
        'names = "fat32"\nplaylists = true\ncopy = true\n'
    )
    for _ in range(2):
        s.flac2all("--profile", "stick", "--config", str(config))


def cluster(s: Session) -> None:
    """A ZeroMQ master without keys and one worker, on a loopback port the OS chose."""
    master = Live(
        [s.tool.exe("flac2all"), MODES, "-c", "-m", "--insecure", "--bind", "127.0.0.1", "--port", "0"]
        + ["-o", str(s.out), str(s.inp)]
    )
    worker = None
    try:
        port = master.when(r"Listening on tcp://127\.0\.0\.1:(\d+)").group(1)
        worker = Live(
            [s.tool.exe("flac2all_worker"), "127.0.0.1", "--port", port, "-t", "2"]
            + ["--insecure", "--allow", str(s.work)]
        )
        step = master.wait()
        ended = worker.wait(30)
        step.extra["worker exit status"] = str(ended.code)
    finally:
        master.stop()
        if worker is not None:
            worker.stop()
    s.record(step)


def dask(s: Session) -> None:
    """A Dask scheduler and one worker of two threads on loopback, named by a scheduler file."""
    dask_exe = s.tool.exe("dask")
    if not Path(dask_exe).exists():
        print(f"    dask: skipped, no {dask_exe} (pip install -e '.[dask]' there)", flush=True)
        s.document.append("(skipped: no dask in this venv)")
        return
    scheduler_file = s.work / "scheduler.json"
    scheduler = Live(
        [dask_exe, "scheduler", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--port", "0"]
        + ["--no-dashboard"]
    )
    worker = None
    try:
        scheduler.when(r"Scheduler at:")
        worker = Live(
            [dask_exe, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1", "--nthreads", "2"]
            + ["--no-dashboard", "--local-directory", str(s.work / "dask-worker")]
        )
        worker.when(r"Registered to")
        s.flac2all(MODES, "-c", "--dask-scheduler-file", str(scheduler_file), "-o", "OUT", "IN")
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.stop()


def streamed(s: Session) -> None:
    """The first run planned folder by folder (as past 2,000 sources)."""
    s.flac2all(MODES, "-c", "-o", "OUT", "IN", env={**os.environ, "FLAC2ALL_STREAM_AFTER": "1"})


def mirror_streamed(s: Session) -> None:
    """The re-runs of a mirror as a library past 2,000 sources has them
    (planned folder by folder, whole before any job): no-op, retag, move,
    and the orphans kept, then deleted, each with its dry run first."""
    streaming = {**os.environ, "FLAC2ALL_STREAM_AFTER": "1"}
    first(s)
    s.flac2all(MODES, "-c", "-o", "OUT", "IN", env=streaming)
    retag_one(s)
    album = s.inp / "Gamma Ray" / "Live, at: the Hall"
    album.rename(album.with_name("Live at the Hall (remaster)"))
    s.changed(album.parent, album.with_name("Live at the Hall (remaster)"))
    remove_album(s)
    for options in ((), ("--delete",), ("--delete", "--delete-anyway")):
        s.flac2all(MODES, "-c", "--dry-run", *options, "-o", "OUT", "IN", env=streaming)
        s.flac2all(MODES, "-c", *options, "-o", "OUT", "IN", env=streaming)


SCENARIOS: dict[str, Callable[[Session], None]] = {
    "first": first,
    "noop": noop,
    "retag": retag,
    "move": move,
    "delete": delete,
    "keep": keep,
    "dry-first": dry_first,
    "dry-rerun": dry_rerun,
    "plan-json": plan_json,
    "profile": profile,
    "cluster": cluster,
    "dask": dask,
    "streamed": streamed,
    "mirror-streamed": mirror_streamed,
}
# Scenarios whose documents must equal another scenario's with one tool,
# but for the lines that say how the run was planned (whole, or as it went).
ALIKE = {"streamed": "first"}
PLANNED = re.compile(r"^(Converting|Planned): .*\n", re.M)


def play(name: str, tool: Tool, scratch: Path, music: Path) -> str:
    """The normalised document of scenario ``name`` run by ``tool``."""
    work = scratch / f"{name}-{tool.name.replace(' ', '-')}"
    work.mkdir(parents=True)
    s = Session(tool, work, music)
    try:
        SCENARIOS[name](s)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        why = normalise(str(exc), {work: "<WORK>", tool.bin: "<BIN>"})
        s.document.append(f"(scenario stopped: {type(exc).__name__}: {why})")
    document = "\n\n".join(s.document)
    work.with_suffix(".txt").write_text(document)  # beside it, for --keep
    return document


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench same", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", metavar="REF", default=DEFAULT_BASELINE, help=f"git ref (default {DEFAULT_BASELINE})")
    p.add_argument("--only", metavar="NAME", action="append", choices=list(SCENARIOS), help="this scenario only")
    p.add_argument("--self", dest="self_check", action="store_true", help="the baseline against itself")
    p.add_argument("--keep", action="store_true", help="keep the work folders (their path is printed)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    before = baseline(args.baseline)
    after = Tool("baseline again", before.bin) if args.self_check else working_tree()
    music = make_library(BUILD / "library")
    scratch = Path(tempfile.mkdtemp(prefix="flac2all-same-"))
    differs = 0
    try:
        docs: dict[tuple[str, str], str] = {}
        for name in args.only or SCENARIOS:
            t = time.monotonic()
            for tool in (before, after):
                docs[name, tool.name] = play(name, tool, scratch, music)
            diff = compare(docs[name, before.name], docs[name, after.name], (before.name, after.name))
            alike = ALIKE.get(name)
            if alike and (alike, after.name) not in docs:  # --only it
                docs[alike, after.name] = play(alike, after, scratch, music)
            if alike:
                a, b = (PLANNED.sub("", docs[k, after.name]) for k in (alike, name))
                diff += compare(a, b, (alike, name))
            differs += bool(diff)
            print(f"{name:<10} {'DIFFERENT' if diff else 'same'} ({time.monotonic() - t:.1f} s)", flush=True)
            for line in diff:
                print(f"    {line}")
    finally:
        if args.keep:
            print(f"work folders kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{differs} scenario(s) differ; {time.monotonic() - t0:.0f} s")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
