"""Benchmarks: ``python -m bench CASE [...]``; see BENCHMARKS.md.
``python -m bench same [--baseline REF]``: the same behaviour as at REF? (bench/same.py)

Every figure is measured side by side in one run (this machine is shared and
noisy): runs alternate, and medians with min-max are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mutagen.flac import FLAC

import flac2all
from bench import library, same
from bench.master_scale import case_master
from bench.scale import case_scale
from flac2all import codecs, tags

FLAC2ALL = [sys.executable, "-m", "flac2all"]
# The original's default encoder settings, passed explicitly to both tools.
ORIGINAL_DEFAULTS = ["--lame-options=-preset standard:q 0", "--vorbis-options=quality=2", "--opus-options=vbr"]
ORIGINAL_VENV = library.ROOT / "orig-venv"
CORES = os.cpu_count() or 1


def original() -> list[str]:
    """flac2all 5.4 from PyPI, installed into a throwaway venv once."""
    exe = ORIGINAL_VENV / "bin" / "flac2all"
    if not exe.exists():
        print("  installing flac2all==5.4 into a throwaway venv", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ORIGINAL_VENV)], check=True)
        subprocess.run([str(ORIGINAL_VENV / "bin" / "pip"), "install", "-q", "flac2all==5.4", "pyzmq"], check=True)
    return [str(exe)]


HUNG = "hung"


def reaped(proc: subprocess.Popen) -> float | None:
    """None while ``proc`` runs; once it ended, its CPU seconds (user +
    system, with those of the children it reaped: the encoders)."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if not pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_wall(
    argv: list[str], timeout: float, log: Path | None = None, cpu: list[float] | None = None, check: bool = False
) -> float | None | str:
    """Wall seconds of a command; None if it ran past ``timeout``; HUNG if it
    wrote its ``log`` (the work is done) but did not exit within 30 s after.
    Its CPU seconds are appended to ``cpu`` when it completes. ``check``: it
    must exit 0 (SystemExit otherwise)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done_at = None
    while (used := reaped(proc)) is None:
        now = time.perf_counter()
        if log is not None and done_at is None and log.exists() and log.stat().st_mtime > time.time() - (now - t0):
            done_at = now
        if now - t0 > timeout or (done_at is not None and now - done_at > 30):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return HUNG if done_at is not None else None
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, argv))}")
    if cpu is not None:
        cpu.append(used)
    return wall


def encoder_cpu(sources: list[Path], modes: str, decoder_only: bool = False) -> float:
    """CPU seconds of the decode|encode pipelines alone, run one at a time
    outside any tool: the work a perfect scheduler would spread on the cores.
    ``decoder_only``: the first mode's decoder alone, its output dropped."""
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            info = tags.read_source(src).info
            for name in modes.split(",")[:1] if decoder_only else modes.split(","):
                codec = codecs.resolve(name)
                out = Path(tmp) / f"out{codec.extension}"
                stages = codec.commands(src, out, info, codec.default_options)[: 1 if decoder_only else None]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                procs, upstream = [], subprocess.DEVNULL
                for i, argv in enumerate(stages):
                    last = i == len(stages) - 1
                    p = subprocess.Popen(argv, stdin=upstream, stdout=subprocess.DEVNULL if last else subprocess.PIPE)
                    if upstream is not subprocess.DEVNULL:
                        upstream.close()
                    upstream = p.stdout
                    procs.append(p)
                for p in procs:
                    p.wait()
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                total += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                out.unlink(missing_ok=True)
    return total


def timed(argv: list[str], **kw) -> float:
    """Wall seconds of one command (start-up included); it must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, argv))}\n{proc.stderr[-2000:]}")
    return elapsed


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def mirror(sources: Path, modes: str) -> Path:
    """A converted mirror of ``sources``, cached beside it."""
    out = sources.parent / f"{sources.name}-out-{modes.replace(',', '_')}"
    if not (out / ".flac2all" / "state.sqlite").exists():
        print(f"  converting {sources.name} to {modes} once (cached in {out})", flush=True)
        timed([*FLAC2ALL, modes, "-o", str(out), str(sources)])
    return out


def case_noop(args) -> list[str]:
    """No-op re-run over an up-to-date mirror, and its scaling with 10x files."""
    rows = ["| tool | sources x modes | outputs | wall s, median (min-max) | per output |", "|---|---|---|---|---|"]
    results = {}
    subjects = {OURS: None, **BASELINES}
    for count in args.counts:
        src = library.many_short(count, 0.2)
        out = mirror(src, "mp3,opus")
        walls: dict[str, list[float]] = {name: [] for name in subjects}
        for _ in range(args.repeat):  # the tools in turn
            for name, folder in subjects.items():
                walls[name].append(timed(with_pythonpath([*FLAC2ALL, "mp3,opus", "-o", str(out), str(src)], folder)))
        results[count] = statistics.median(walls[OURS])
        for name, values in walls.items():
            per = 1000 * statistics.median(values) / (2 * count)
            rows.append(f"| {name} | {count} x 2 | {2 * count} | {stats(values)} | {per:.3f} ms |")
    if len(args.counts) > 1:
        a, b = args.counts[0], args.counts[-1]
        rows.append(f"\nScaling {a} -> {b} sources ({b / a:g}x): wall x{results[b] / results[a]:.2f}")
    return rows


def edit_tags(root: Path, round_no: int) -> None:
    for path in root.rglob("*.flac"):
        f = FLAC(path)
        f["COMMENT"] = f"edited {round_no}"
        f.save()


def case_retag(args) -> list[str]:
    """After a tag edit of every source: retag run vs re-encoding run."""
    src = library.full_length(args.retag_minutes) if args.retag_minutes else library.many_short(200, 10.0)
    work = src.parent / f"{src.name}-retag"
    shutil.rmtree(work, ignore_errors=True)
    out = work / "out"
    timed([*FLAC2ALL, "mp3", "-o", str(out), str(src)])
    count = sum(1 for _ in src.rglob("*.flac"))
    encode, retag = [], []
    for r in range(args.repeat):
        encode.append(timed([*FLAC2ALL, "mp3", "-f", "-o", str(out), str(src)]))
        edit_tags(src, r)
        retag.append(timed([*FLAC2ALL, "mp3", "-o", str(out), str(src)]))
    ratio = statistics.median(retag) / statistics.median(encode)
    return [
        f"{count} mp3 outputs of 10 s each; every source's tags edited before each retag run.",
        "",
        "| run | wall s, median (min-max) |",
        "|---|---|",
        f"| re-encode all (-f) | {stats(encode)} |",
        f"| retag all (tags changed) | {stats(retag)} |",
        "",
        f"Retag / re-encode: {ratio:.3f}",
    ]


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# The tools compared, run in turn: the original, and this flac2all with and
# without its shared decoder (to show what decoding once is worth); with
# --baseline REF, also this flac2all as it was at REF (name -> PYTHONPATH).
ORIGINAL = "flac2all 5.4"
OURS = "this flac2all"
PER_MODE = "this flac2all --decode-per-mode"
# bench/bare.py: the least an orchestrator of processes adds (short files only).
BARE = "bare pipelines: xargs, bash and tee (no check, tag or staging)"
BASELINES: dict[str, Path] = {}


def baseline(ref: str) -> tuple[str, Path]:
    """This repository's package as it was at ``ref`` (git archive), to be
    run with PYTHONPATH pointing at it: the before of a before/after."""
    sha = subprocess.run(["git", "rev-parse", "--short=12", ref], capture_output=True, text=True, check=True)
    folder = library.ROOT / f"baseline-{sha.stdout.strip()}"
    if not (folder / "flac2all").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref, "flac2all"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return f"this flac2all at {ref}", folder


def compiled(packages: list[Path]) -> None:
    """Byte-compile the packages timed, as an installed package is (pip
    compiles what it installs, the original's too): with
    PYTHONDONTWRITEBYTECODE set, as in some shells, every run would
    compile about 80 modules anew, a quarter of a second of wall before
    its first encode."""
    for package in packages:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, stdout=subprocess.DEVNULL)


def with_pythonpath(argv: list[str], folder: Path | None) -> list[str]:
    """``argv`` run from ``folder``'s package: in that folder too, since
    ``python -m`` puts the current folder first on sys.path, before
    PYTHONPATH (from anywhere else it could import another flac2all)."""
    return argv if folder is None else ["env", "-C", str(folder), f"PYTHONPATH={folder}", *argv]


Walls = dict[str, list[float | None]]


class Rounds:
    """What side_by_side measured, per tool, one entry per run."""

    def __init__(self, names) -> None:
        self.walls: Walls = {name: [] for name in names}
        self.busy: dict[str, list[float]] = {name: [] for name in names}  # CPU used / (wall x cores)
        self.probed: dict[str, list[float]] = {name: [] for name in names}  # probe() right after the run
        self.own: list[float] = []  # this flac2all's process alone, when side_by_side(own=True)
        # CPU seconds the tool and everything it started used: less sensitive
        # than the wall to other load on a shared machine.
        self.cpu: dict[str, list[float]] = {name: [] for name in names}


def side_by_side(
    src: Path,
    modes: str,
    repeat: int,
    timeout: float,
    work: Path,
    probe: Callable[[], float] | None = None,
    own: bool = False,
    bare: bool = False,
) -> Rounds:
    """Full conversions of ``src``, alternating the tools; ``probe`` (for
    example the encoders' CPU on a sample) is measured right after each
    complete run, so that the machine's drift hits both alike. ``own``:
    this flac2all runs through OWN_CPU, which tells its process's own CPU
    apart from its encoders' (``Rounds.own``). ``bare``: also bench/bare.py's
    pipelines, with no Python between the programs."""
    report = work / "own-cpu.json"
    tools = {
        ORIGINAL: original(),
        OURS: [sys.executable, "-c", OWN_CPU, str(report)] if own else FLAC2ALL,
        PER_MODE: [*FLAC2ALL, "--decode-per-mode"],
        **{name: with_pythonpath(FLAC2ALL, folder) for name, folder in BASELINES.items()},
        **({BARE: [sys.executable, "-m", "bench.bare"]} if bare else {}),
    }
    rounds = Rounds(tools)
    for _ in range(repeat):
        for name, argv in tools.items():
            out = fresh(work / "out")
            report.unlink(missing_ok=True)  # a run killed before its exit writes none: no figure, not the last one
            cpu: list[float] = []
            # (The bare pipelines' failure must not pass for a fast run.)
            wall = run_wall(
                [*argv, modes, *ORIGINAL_DEFAULTS, "-o", str(out), str(src)], timeout, cpu=cpu, check=name == BARE
            )
            rounds.walls[name].append(wall)
            if cpu and isinstance(wall, float):
                rounds.busy[name].append(cpu[0] / (wall * CORES))
                rounds.cpu[name].append(cpu[0])
                if own and name == OURS:
                    rounds.own.append(sum(json.loads(report.read_text())) if report.exists() else math.nan)
                if probe is not None:
                    rounds.probed[name].append(probe())
    return rounds


def fmt(values: list) -> str:
    done = [v for v in values if isinstance(v, float)]
    hung, timed_out = values.count(HUNG), values.count(None)
    notes = [f"{hung} hung after writing its log (killed 30 s later)"] * bool(hung)
    notes += [f"{timed_out} timed out"] * bool(timed_out)
    text = stats(done) if done else "no complete run"
    return f"{text}; {', '.join(notes)}" if notes else text


def median_or_none(values: list) -> float | None:
    done = [v for v in values if isinstance(v, float)]
    return statistics.median(done) if done else None


def case_full(args) -> list[str]:
    """Full conversion to mp3,vorbis,opus of about 30 minutes of audio."""
    src = library.full_length(args.minutes)
    sources = sorted(src.rglob("*.flac"))
    modes = "mp3,vorbis,opus"
    rounds = side_by_side(src, modes, args.repeat, 3600, src.parent / "full-work")
    walls, busy = rounds.walls, rounds.busy
    cpu = encoder_cpu(sources, modes)
    rows = [
        f"{len(sources)} tracks, {sum(FLAC(p).info.length for p in sources) / 60:.1f} min of audio, modes {modes}, "
        f"{CORES} cores; encoders alone (decode|encode pipelines run one by one): {cpu:.1f} CPU s.",
        "",
        "| tool | wall s, median (min-max) | parallel efficiency = encoder CPU / (wall x cores) "
        "| cores busy = CPU used / (wall x cores) |",
        "|---|---|---|---|",
    ]
    for tool, values in walls.items():
        wall = median_or_none(values)
        efficiency = f"{cpu / (wall * CORES):.3f}" if wall else ""
        used = stats(busy[tool]) if busy[tool] else ""
        rows.append(f"| {tool} | {fmt(values)} | {efficiency} | {used} |")
    rows.append("")
    rows += ratios(walls)
    rows += cpu_rows(rounds)
    return rows


def cpu_rows(rounds: Rounds) -> list[str]:
    """CPU seconds used per tool, and this flac2all's against its baselines."""
    rows = ["", "| tool | CPU s used (the tool and all it started), median (min-max) |", "|---|---|"]
    rows += [f"| {tool} | {stats(values)} |" for tool, values in rounds.cpu.items() if values]
    for base in BASELINES:
        a, b = rounds.cpu[OURS], rounds.cpu[base]
        if a and b:
            per_round = ", ".join(f"{x / y:.3f}" for x, y in zip(a, b, strict=False))
            rows.append(
                f"\n- CPU, {OURS} / {base}: {statistics.median(a) / statistics.median(b):.3f} (per round: {per_round})"
            )
    return rows


def ratios(walls: Walls) -> list[str]:
    """Ratios of median walls, and per round of the alternation."""
    rows = []
    compared = ((OURS, ORIGINAL), (PER_MODE, ORIGINAL), (OURS, PER_MODE), (OURS, BARE), *((OURS, b) for b in BASELINES))
    for num, den in compared:
        if num not in walls or den not in walls:
            continue
        a, b = median_or_none(walls[num]), median_or_none(walls[den])
        if a and b:
            pairs = zip(walls[num], walls[den], strict=True)
            per_round = [x / y for x, y in pairs if isinstance(x, float) and isinstance(y, float)]
            rounds = ", ".join(f"{r:.3f}" for r in per_round)
            rows.append(f"- {num} / {den}: {a / b:.3f} (per round: {rounds})")
    return rows


KEEP, COMPUTE = "--replaygain keep", "--replaygain compute"


def case_loudness(args) -> list[str]:
    """What measuring loudness costs: the full conversion with ``--replaygain
    compute`` and with ``keep``, alternating, the CPU of the tool and all it
    started compared round by round; then the meter alone against loudgain
    and ffmpeg's ebur128 filter on the same track."""
    src = library.full_length(args.minutes)
    sources = sorted(src.rglob("*.flac"))
    modes = "mp3,vorbis,opus"
    out = src.parent / "loudness-work" / "out"
    cpu: dict[str, list[float]] = {KEEP: [], COMPUTE: []}
    walls: dict[str, list[float | None]] = {KEEP: [], COMPUTE: []}
    for _ in range(args.repeat):
        for policy in cpu:
            argv = [*FLAC2ALL, modes, *ORIGINAL_DEFAULTS, *policy.split(), "-o", str(fresh(out)), str(src)]
            walls[policy].append(run_wall(argv, 3600, cpu=cpu[policy]))
    minutes = sum(FLAC(p).info.length for p in sources) / 60
    rows = [
        f"{len(sources)} tracks in {len({p.parent for p in sources})} folders, {minutes:.1f} min of audio, "
        f"modes {modes}, {CORES} cores, {args.repeat} rounds alternating.",
        "",
        "| flac2all | CPU s (the tool and all it started), median (min-max) | wall s, median (min-max) |",
        "|---|---|---|",
    ]
    rows += [f"| {policy} | {stats(cpu[policy])} | {fmt(walls[policy])} |" for policy in cpu]
    per_round = [c / k for c, k in zip(cpu[COMPUTE], cpu[KEEP], strict=False)]
    if per_round:
        rows.append(
            f"\n- CPU, compute / keep, per round: median {statistics.median(per_round):.3f} "
            f"(min {min(per_round):.3f}, max {max(per_round):.3f}; rounds: {', '.join(f'{r:.3f}' for r in per_round)})"
        )
    return rows + meter_rows(max(sources, key=lambda p: FLAC(p).info.length), args.repeat)


METER = """
import sys, time
from flac2all.audio.pcm import parse_header
t0 = time.process_time()
from flac2all.audio import cmeter, npmeter
from flac2all.audio.loudness import Meter
m = Meter(44100, 2, 2, engines=[{"c": cmeter.CMeter, "numpy": npmeter.NumpyMeter}[sys.argv[1]]])
t1 = time.process_time()
wav = sys.stdin.buffer.read()
fmt, start, size = parse_header(wav)
t2 = time.process_time()
data = memoryview(wav)[start:]
for i in range(0, len(data), 65536):
    m(data[i : i + 65536])
m.result()
print(t1 - t0, time.process_time() - t2)
"""


def meter_rows(track: Path, repeat: int) -> list[str]:
    """CPU seconds per hour of audio: the meter fed the decoded PCM in the
    tap's chunks (its import apart), loudgain and ffmpeg's ebur128 with true
    peak (each decoding the FLAC itself), and flac's decode alone."""
    seconds = FLAC(track).info.length
    wav = subprocess.run(["flac", "-dcs", str(track)], capture_output=True, check=True).stdout
    engines = {"meter, C loop": "c", "meter, numpy and scipy": "numpy"}
    runs: dict[str, list[float]] = {name: [] for name in engines}
    runs.update({"loudgain": [], "ffmpeg ebur128": [], "flac -d": []})
    imports: dict[str, list[float]] = {name: [] for name in engines}
    others = {
        "loudgain": ["loudgain", "-q", "-O", str(track)],
        "ffmpeg ebur128": ["ffmpeg", "-nostats", "-i", str(track), "-af", "ebur128=peak=true", "-f", "null", "-"],
        "flac -d": ["flac", "-dcs", str(track)],
    }
    for _ in range(repeat):
        for name, engine in engines.items():
            argv = [sys.executable, "-c", METER, engine]
            imported, fed = map(float, subprocess.run(argv, input=wav, capture_output=True, check=True).stdout.split())
            imports[name].append(imported)
            runs[name].append(fed)
        for name, argv in others.items():
            if shutil.which(argv[0]):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                runs[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    hour = 3600 / seconds
    rows = [
        "",
        f"Measuring one track ({seconds / 60:.1f} min, stereo 44.1 kHz), CPU s per hour of audio, "
        f"median (min-max) of {repeat}:",
        "",
        "| measured by | CPU s per hour of audio |",
        "|---|---|",
    ]
    for name, values in runs.items():
        if values:
            rows.append(f"| {name} | {stats([v * hour for v in values])} |")
    rows.append("")
    rows += [f"The {name}: made once a process (imports, loading) in {stats(v)} CPU s." for name, v in imports.items()]
    return rows


def case_short(args) -> list[str]:
    """2000 files of 1 s to opus,vorbis: the tools' own cost per task."""
    src = library.many_short(args.short_count, 1.0)
    modes = "opus,vorbis"
    tasks = 2 * args.short_count
    # The sources are copies of one file: the encoders' CPU is timed on a
    # sample, right after each run.
    sample = sorted(src.rglob("*.flac"))[:60]

    def encoders_cpu() -> float:
        return encoder_cpu(sample, modes) * args.short_count / len(sample)

    rounds = side_by_side(
        src, modes, args.repeat, args.timeout, src.parent / "short-work", encoders_cpu, own=True, bare=True
    )
    walls = rounds.walls
    cpus = [c for values in rounds.probed.values() for c in values]
    rows = [
        f"{args.short_count} files of 1 s, modes {modes} ({tasks} tasks), {CORES} cores; encoders alone: "
        f"{stats(cpus)} CPU s (decode|encode pipelines of a sample of {len(sample)} files, run one by one "
        "right after each run, scaled to all files).",
        "",
        "| tool | wall s, median (min-max) | overhead per task = (wall - encoder CPU / cores) / tasks, "
        "per run with the encoder CPU timed right after it |",
        "|---|---|---|",
    ]
    for tool, values in walls.items():
        done = [w for w in values if isinstance(w, float)]
        overheads = [1000 * (w - c / CORES) / tasks for w, c in zip(done, rounds.probed[tool], strict=True)]
        overhead = f"{stats(overheads)} ms" if overheads else "n/a (no complete run)"
        rows.append(f"| {tool} | {fmt(values)} | {overhead} |")
    rows += ["", *ratios(walls), *cpu_rows(rounds)]
    rows += floor_rows(
        cpus,
        [encoder_cpu(sample, modes, decoder_only=True) * args.short_count / len(sample) for _ in range(3)],
        modes,
        rounds,
    )
    # The no-op re-run over what was just converted, both tools.
    noop: dict[str, list[float | None]] = {ORIGINAL: [], OURS: []}
    for name, argv in ((ORIGINAL, original()), (OURS, FLAC2ALL)):
        out = fresh(src.parent / "short-work" / "out")
        log = out / "conversion_results.log"
        if run_wall([*argv, modes, *ORIGINAL_DEFAULTS, "-o", str(out), str(src)], args.timeout, log) is None:
            continue
        for _ in range(args.repeat):
            argv_again = [*argv, modes, *ORIGINAL_DEFAULTS, "-o", str(out), str(src)]
            noop[name].append(run_wall(argv_again, 120, log))
            if noop[name][-1] is None:  # it hangs (the original always does): once is enough
                break
    rows += [
        "",
        f"No-op re-run over the converted library ({tasks} up-to-date outputs, time-out 120 s):",
        "",
        "| tool | wall s, median (min-max) |",
        "|---|---|",
    ]
    rows += [f"| {tool} | {fmt(values)} |" for tool, values in noop.items()]
    return rows


# Runs flac2all (argv[2:]) and writes to argv[1] the CPU seconds of its own
# process alone, user and system, all threads, at its exit: not the encoders'
# (an exited process's rusage as its parent sees it includes its children's).
OWN_CPU = """
import atexit, json, resource, sys
out = sys.argv.pop(1)
def report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        json.dump([usage.ru_utime, usage.ru_stime], f)
atexit.register(report)
sys.argv[0] = "flac2all"
from flac2all.face.cli import main
sys.exit(main())
"""


def case_own(args) -> list[str]:
    """Our process's own CPU per task on short files (the encoders'
    excluded), this flac2all against each --baseline, the tools run at
    the same time in each round so that load from elsewhere weighs on
    them alike: the figure to judge a change by on a shared machine."""
    src = library.many_short(args.own_count, 1.0)
    modes, tasks = "opus,vorbis", 2 * args.own_count
    tools = {OURS: None, **BASELINES}
    own: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
    walls: dict[str, list[float]] = {name: [] for name in tools}
    work = src.parent / "own-work"
    for _ in range(args.repeat):
        started = {}
        for i, (name, folder) in enumerate(tools.items()):
            out, report = fresh(work / f"out{i}"), work / f"cpu{i}.json"
            argv = [sys.executable, "-c", OWN_CPU, str(report), modes, *ORIGINAL_DEFAULTS, "-o", str(out), str(src)]
            proc = subprocess.Popen(with_pythonpath(argv, folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started[name] = (proc, report, time.perf_counter())
        for name, (proc, report, t0) in started.items():
            if proc.wait() == 0:
                walls[name].append(time.perf_counter() - t0)
                user, system = json.loads(report.read_text())
                own[name].append((user, system))
    rows = [
        f"{args.own_count} files of 1 s, modes {modes} ({tasks} tasks), the tools at once in each of "
        f"{args.repeat} rounds; CPU of the flac2all process itself (all its threads, start-up included; "
        "not the encoders'):",
        "",
        "| tool | own CPU ms per task, median (min-max) | of which system | wall s (all tools at once) |",
        "|---|---|---|---|",
    ]
    for name, values in own.items():
        if values:
            per_task = [1000 * (u + s) / tasks for u, s in values]
            system = statistics.median(1000 * s / tasks for _, s in values)
            rows.append(f"| {name} | {stats(per_task)} | {system:.3f} | {stats(walls[name])} |")
    for base in BASELINES:
        pairs = [(sum(a), sum(b)) for a, b in zip(own[OURS], own[base], strict=False)]
        if pairs:
            per_round = ", ".join(f"{a / b:.3f}" for a, b in pairs)
            ratio = statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs)
            rows.append(f"\n- own CPU, {OURS} / {base}: {ratio:.3f} (per round: {per_round})")
    return rows


def floor_rows(encoders: list[float], decoder: list[float], modes: str, rounds: Rounds) -> list[str]:
    """The least wall any tool could take that decodes each source once and
    verifies it: the pipelines' CPU with one decode a source, at full cores,
    nothing else; against the original's median wall, and each of our runs
    against the floor timed right after it (the machine's speed drifts by
    tens of percent between runs here: a round's own floor follows it)."""
    if not encoders or not decoder:
        return []
    extra_decodes = (len(modes.split(",")) - 1) * statistics.median(decoder)
    once = statistics.median(encoders) - extra_decodes
    floor = once / CORES
    original_wall = median_or_none(rounds.walls[ORIGINAL])
    rows = [
        "",
        f"Floor: the decoder alone {stats(decoder)} CPU s (the same sample, scaled); the pipelines decoding each "
        f"source once {once:.3f} CPU s; on {CORES} cores with no other cost: {floor:.3f} s of wall",
    ]
    if original_wall:
        rows[-1] += f", {floor / original_wall:.3f} of the original's median wall"
    ours = [w for w in rounds.walls[OURS] if isinstance(w, float)]
    for tool in (OURS, BARE):
        walls = [w for w in rounds.walls.get(tool, []) if isinstance(w, float)]
        probed = rounds.probed.get(tool, [])
        per_round = [w / ((c - extra_decodes) / CORES) for w, c in zip(walls, probed, strict=True)]
        if per_round:
            rows += [
                "",
                f"{tool[0].upper()}{tool[1:]}: wall / the floor timed right after it, per round: median "
                f"{stats(per_round)} (rounds {', '.join(f'{r:.3f}' for r in per_round)}); of the medians: "
                f"{statistics.median(walls) / floor:.3f}",
            ]
    # The same floor from the run itself: its decoders' and encoders' CPU
    # (the run's CPU less the flac2all process's own) over the cores, at the
    # machine's speed of that very run.
    spent = zip(ours, rounds.cpu[OURS], rounds.own, strict=True) if rounds.own else ()
    within = [w / ((c - mine) / CORES) for w, c, mine in spent if math.isfinite(mine)]
    if within:
        rows += [
            "",
            f"This flac2all's wall / its own run's decoders' and encoders' CPU over the cores (the run's CPU less "
            f"its process's own, {stats([m for m in rounds.own if math.isfinite(m)])} CPU s), "
            f"per round: median {stats(within)} "
            f"(rounds {', '.join(f'{r:.3f}' for r in within)})",
        ]
    return rows


def cpu_of(proc: subprocess.Popen, timeout: float) -> float:
    """Wait for ``proc``; its CPU seconds (see reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = reaped(proc)
        if used is not None:
            return used
        time.sleep(0.01)
    raise SystemExit(f"{proc.args} did not finish within {timeout} s")


class Lines:
    """A process whose output lines are collected with their arrival time."""

    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        import threading

        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
        )
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line.rstrip()))

    def when(self, pattern: str, timeout: float = 60) -> tuple[float, re.Match]:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for t, line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return t, m
            time.sleep(0.01)
        raise SystemExit(f"no {pattern!r} within {timeout} s:\n" + "\n".join(line for _, line in self.lines[-30:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def knows(folder: Path | None, flag: str) -> bool:
    """Whether this flac2all (None) or a baseline's knows ``flag``: on
    loopback without keys, one that has keys by default needs
    ``--insecure`` (and its worker ``--allow``); one from before refuses them."""
    if folder is None:
        return True
    sources = (folder / "flac2all").rglob("*.py")
    return any(f'"{flag}"' in p.read_text(encoding="utf-8", errors="replace") for p in sources)  # as argparse has it


def master(modes: str, src: Path, out: Path, *extra: str, folder: Path | None = None) -> tuple[Lines, int]:
    plain = ["--insecure"] if knows(folder, "--insecure") else []
    m = Lines(
        with_pythonpath(
            [*FLAC2ALL, modes, "-m", "--bind", "127.0.0.1", "--port", "0", "-o", str(out), *plain, *extra, str(src)],
            folder,
        ),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _, found = m.when(r"Listening on tcp://127\.0\.0\.1:(\d+)")
    return m, int(found.group(1))


def worker(port: int, threads: int, env: dict | None = None, folder: Path | None = None) -> Lines:
    argv = [sys.executable, "-m", "flac2all.cluster.worker", "127.0.0.1", "--port", str(port), "-t", str(threads)]
    if knows(folder, "--insecure"):  # no keys
        argv += ["--insecure"]
    if knows(folder, "--allow"):  # it may touch the bench's folders only
        argv += ["--allow", str(library.ROOT), "--allow", "/dev/shm"]
    return Lines(with_pythonpath(argv, folder), env=env)


def case_cluster(args) -> list[str]:
    """The cluster measures for this flac2all, then for each --baseline."""
    rows = []
    for name, folder in {OURS: None, **BASELINES}.items():
        rows += [f"{name}:", "", *cluster_of(args, folder), ""]
    return rows


def cluster_of(args, folder: Path | None) -> list[str]:
    """Dispatch rate with trivial tasks (copies of tiny files) and 4 worker
    processes on loopback; time from a worker's SIGKILL to re-dispatch."""
    count = args.dispatch_tasks
    src = library.ROOT / f"trivial-{count}"
    marker = src.with_name(src.name + ".complete")  # outside: -c would copy it
    if not marker.exists():
        shutil.rmtree(src, ignore_errors=True)
        for i in range(count):
            path = src / f"d{i // 100:03d}" / f"f{i:05d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(i))
        marker.touch()
    rates: list[float] = []
    master_cpu: list[float] = []  # CPU seconds per task
    worker_cpu: list[float] = []
    # The copies go to a tmpfs when there is one: on this machine's ext4,
    # creating thousands of files soon after thousands were deleted (the
    # previous run's) makes every create scan past recently deleted inodes
    # (a third of the workers' CPU in `perf`), which measures the disk, not
    # the dispatch.
    scratch = Path("/dev/shm") if os.path.ismount("/dev/shm") else src.parent
    outs = [scratch / f"flac2all-bench-trivial-{count}-out-{i}" for i in range(args.repeat)]
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    for out in outs:
        # Copies only, no FLAC: this flac2all refuses an input without FLAC unless told.
        empty_ok = ("--allow-empty",) if folder is None else ()
        m, port = master("mp3", src, out, "-c", *empty_ok, folder=folder)
        w = worker(port, 4, folder=folder)
        try:
            start, _ = m.when(r"Commencing run", 60)
            master_cpu.append(cpu_of(m.proc, 600) / count)
            end = m.lines[-1][0]
            worker_cpu.append(cpu_of(w.proc, 60) / count)
        finally:
            m.stop()
            w.stop()
        copied = sum(1 for _, line in m.lines if line.startswith(("copied ", "OK ")))  # OK: before the verbs
        if copied != count:
            raise SystemExit(f"{copied} of {count} tasks done")
        rates.append(count / (end - start))
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    # Re-dispatch after SIGKILL: 2 slow tasks, 3 workers, kill a busy one.
    slow_src = library.many_short(2, 0.5, name="two-short")
    fake = src.parent / "slow-bin"
    fake.mkdir(exist_ok=True)
    real = shutil.which("opusenc")
    (fake / "opusenc").write_text(
        f'#!/bin/bash\ncase "$1" in --version) exec {real} "$@";; esac\nsleep 8\nexec {real} "$@"\n'
    )
    (fake / "opusenc").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    redispatch = []
    for _ in range(args.repeat):
        out = fresh(src.parent / "redispatch-out")
        m, port = master("opus", slow_src, out, folder=folder)
        a, b = worker(port, 1, env, folder), worker(port, 1, env, folder)
        c = None
        try:
            m.when(r"Got 2 worker", 30)
            time.sleep(1.0)  # both busy with a task
            c = worker(port, 1, env, folder)
            m.when(r"Got 3 worker", 30)
            _, pid = a.when(r"pid (\d+)")
            t_kill = time.perf_counter()
            os.kill(int(pid.group(1)), signal.SIGKILL)
            t_requeue, _ = m.when(r"declared dead; 1 task\(s\) requeued", 30)
            redispatch.append(t_requeue - t_kill)
        finally:
            for p in (m, a, b, c):
                if p is not None:
                    p.stop()
    return [
        f"{count} trivial tasks (copies of tiny files, -c, into {scratch}), one worker host with 4 processes, "
        f"master and workers on this {CORES}-core machine, loopback:",
        "",
        "| measure | median (min-max) |",
        "|---|---|",
        f"| dispatch rate, tasks/s (first worker joined -> last result) | {stats(rates)} |",
        f"| master CPU per task, ms (start-up and planning included) | {stats([x * 1000 for x in master_cpu])} |",
        f"| the 4 worker processes' CPU per task, ms | {stats([x * 1000 for x in worker_cpu])} |",
        f"| SIGKILL of a busy worker process -> its task requeued and re-dispatched, s | {stats(redispatch)} |",
        "",
        "The original flac2all 5.4 clears a silent worker after 600 s (its code: `time.time() - workers[key] > 600`),",
        "and tasks queued in a dead worker's PUSH pipe are lost (docs/cluster.md); not re-measured here.",
    ]


class DaskCluster:
    """A ``dask scheduler`` and ``dask worker`` processes (``workers`` of
    ``threads`` threads each) on loopback, up until ``stop``."""

    def __init__(self, workers: int, env: dict | None = None, threads: int = 1) -> None:
        dask = [sys.executable, "-m", "dask"]
        env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
        self.scheduler = Lines(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"], env
        )
        _, found = self.scheduler.when(r"Scheduler at:\s+(tcp://\S+)")
        self.address = found.group(1)
        self.scratch = Path(tempfile.mkdtemp(prefix="flac2all-bench-dask-"))
        self.workers = Lines(
            [*dask, "worker", self.address, "--nworkers", str(workers), "--nthreads", str(threads), "--no-dashboard"]
            + ["--local-directory", str(self.scratch)],
            env,
        )
        deadline = time.monotonic() + 60
        while sum(1 for _, line in self.workers.lines if "Registered to" in line) < workers:
            if time.monotonic() > deadline:
                raise SystemExit("dask workers did not start:\n" + "\n".join(line for _, line in self.workers.lines))
            time.sleep(0.05)

    def stop(self) -> None:
        self.workers.stop()
        self.scheduler.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


def zmq_wall(modes: str, src: Path, out: Path, processes: int) -> float:
    """Wall seconds of a ZeroMQ run: the master, and one worker host with
    ``processes`` worker processes started as soon as it listens."""
    t0 = time.perf_counter()
    m, port = master(modes, src, out)
    w = worker(port, processes)
    try:
        cpu_of(m.proc, 3600)
        if m.proc.returncode != 0:
            raise SystemExit(f"the ZeroMQ run failed: {m.proc.returncode}")
        return time.perf_counter() - t0
    finally:
        m.stop()
        w.stop()


def dask_wall(modes: str, src: Path, out: Path, processes: int, threads: int = 1) -> float:
    """Wall seconds of a Dask run (the flac2all client), the cluster
    (scheduler and ``processes`` workers of ``threads`` threads) already up."""
    cluster = DaskCluster(processes, threads=threads)
    try:
        return timed([*FLAC2ALL, modes, "--dask", cluster.address, "-o", str(out), str(src)])
    finally:
        cluster.stop()


BACKENDS: dict[str, Callable[[str, Path, Path, int], float]] = {
    "local (-t 2)": lambda modes, src, out, n: timed([*FLAC2ALL, modes, "-t", str(n), "-o", str(out), str(src)]),
    "ZeroMQ cluster (1 worker host, -t 2)": zmq_wall,
    "Dask (scheduler, 2 one-thread workers)": dask_wall,
    # As the README advises (a job's time is in its encoders, not in Python):
    # one worker process per node, a thread per core.
    "Dask (scheduler, 1 worker of 2 threads)": lambda modes, src, out, n: dask_wall(modes, src, out, 1, n),
}


def case_dask(args) -> list[str]:
    """Local, ZeroMQ and Dask side by side on loopback, 2 worker processes
    each: full conversion, short files (overhead per task), and the time
    from a worker's SIGKILL to its job running again."""
    n = CORES
    full = library.full_length(args.minutes)
    short = library.many_short(args.short_count, 1.0)
    work = fresh(library.ROOT / "dask-work")
    cases = [("full", full, "mp3,vorbis,opus"), ("short", short, "opus,vorbis")]
    walls = {(case, name): [] for case, _, _ in cases for name in BACKENDS}
    cpu: dict[str, list[float]] = {case: [] for case, _, _ in cases}
    samples = {case: sorted(src.rglob("*.flac"))[:60] for case, src, _ in cases}
    for _ in range(args.repeat):
        for case, src, modes in cases:
            for name, wall in BACKENDS.items():
                walls[case, name].append(wall(modes, src, fresh(work / "out"), n))
            scale = sum(1 for _ in src.rglob("*.flac")) / len(samples[case])
            cpu[case].append(encoder_cpu(samples[case], modes) * scale)
    rows = [
        f"Loopback, {CORES} cores; every tool runs alone with 2 slots (ZeroMQ: `flac2all_worker -t 2`;"
        " Dask: `dask worker --nworkers 2 --nthreads 1`, or `--nworkers 1 --nthreads 2` as the README advises,"
        " started before the run, not timed); the encoders' CPU is timed on a sample of 60 files right after"
        " each round.",
        "",
        "| case | tool | wall s, median (min-max) | overhead per task = (wall - encoder CPU / cores) / tasks |",
        "|---|---|---|---|",
    ]
    for case, src, modes in cases:
        tasks = sum(1 for _ in src.rglob("*.flac")) * len(modes.split(","))
        for name in BACKENDS:
            values = walls[case, name]
            over = [1000 * (w - c / CORES) / tasks for w, c in zip(values, cpu[case], strict=True)]
            rows.append(f"| {case}: {tasks} tasks, {modes} | {name} | {stats(values)} | {stats(over)} ms |")
    rows.append("")
    zmq, dsk, threaded = list(BACKENDS)[1:]
    for case, _, _ in cases:
        for name in (dsk, threaded):
            per_round = [d / z for d, z in zip(walls[case, name], walls[case, zmq], strict=True)]
            ratio = statistics.median(walls[case, name]) / statistics.median(walls[case, zmq])
            rounds = ", ".join(f"{r:.3f}" for r in per_round)
            rows.append(f"- {case}: {name} / ZeroMQ {ratio:.3f} (per round: {rounds})")
    rerun = {zmq: [], dsk: []}
    for _ in range(args.repeat):
        rerun[zmq].append(zmq_rerun(work))
        rerun[dsk].append(dask_rerun(work))
    rows += [
        "",
        "SIGKILL of a busy worker process (its encoder sleeping 8 s) -> its job's encoder starting again on an"
        " idle worker, 3 one-process workers:",
        "",
        "| tool | s, median (min-max) |",
        "|---|---|",
        *(f"| {name} | {stats(values)} |" for name, values in rerun.items()),
    ]
    return rows


def slow_marking_opusenc(folder: Path, marks: Path) -> dict:
    """An environment whose opusenc notes each start (time, and the worker
    process that ran it, its parent) in ``marks``, then sleeps 8 s."""
    fresh(folder)
    fresh(marks)
    real = shutil.which("opusenc")
    (folder / "opusenc").write_text(
        f'#!/bin/bash\ncase "$1" in --version) exec {real} "$@";; esac\n'
        f'case "${{@: -1}}" in *flac2all-probe-*) exec {real} "$@";; esac\n'  # Dask's check of the options
        f'echo "$(date +%s.%N) $PPID" > {marks}/$$\nsleep 8\nexec {real} "$@"\n'
    )
    (folder / "opusenc").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def starts(marks: Path, count: int, timeout: float = 60) -> list[tuple[float, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.read_text().split() for p in marks.iterdir()]
        found = [(float(t), int(pid)) for t, pid in (f for f in found if len(f) == 2)]
        if len(found) >= count:
            return sorted(found)
        time.sleep(0.01)
    raise SystemExit(f"{count} encoder starts expected in {marks}")


def killed_until_rerun(marks: Path) -> float:
    """Kill the worker process of the first encoder; seconds until a third
    encoder (the rerun) starts."""
    (_, victim), _ = starts(marks, 2)
    t_kill = time.time()
    os.kill(victim, signal.SIGKILL)
    return starts(marks, 3)[-1][0] - t_kill


def zmq_rerun(work: Path) -> float:
    src = library.many_short(2, 0.5, name="two-short")
    env = slow_marking_opusenc(work / "slow-bin", work / "marks")
    m, port = master("opus", src, fresh(work / "rerun-out"))
    ws = [worker(port, 1, env) for _ in range(2)]
    try:
        starts(work / "marks", 2)
        ws.append(worker(port, 1, env))
        m.when(r"Got 3 worker", 30)
        return killed_until_rerun(work / "marks")
    finally:
        for p in (m, *ws):
            p.stop()


def dask_rerun(work: Path) -> float:
    src = library.many_short(2, 0.5, name="two-short")
    env = slow_marking_opusenc(work / "slow-bin", work / "marks")
    cluster = DaskCluster(3, env)
    client = Lines([*FLAC2ALL, "opus", "--dask", cluster.address, "-o", str(fresh(work / "rerun-out")), str(src)])
    try:
        return killed_until_rerun(work / "marks")
    finally:
        client.stop()
        cluster.stop()


CASES: dict[str, Callable] = {
    "noop": case_noop,
    "retag": case_retag,
    "full": case_full,
    "loudness": case_loudness,
    "short": case_short,
    "own": case_own,
    "cluster": case_cluster,
    "dask": case_dask,
    "master": case_master,
    "scale": case_scale,
}


def main() -> None:
    if sys.argv[1:2] == ["same"]:  # its own options: a check, not a measure
        sys.exit(same.main(sys.argv[2:]))
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "cases",
        nargs="*",
        choices=[*CASES, []],
        default=list(CASES),
        metavar="CASE",
        help=f"which to run: {', '.join(CASES)} (default: all)",
    )
    p.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5)")
    p.add_argument(
        "--counts",
        type=int,
        nargs="+",
        default=[2000, 20000],
        help="source counts for the no-op case (default: 2000 20000)",
    )
    p.add_argument("--retag-minutes", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--minutes", type=float, default=30.0, help="audio in the full-conversion case (default 30)")
    p.add_argument("--short-count", type=int, default=2000, help="files in the short-files case (default 2000)")
    p.add_argument("--own-count", type=int, default=400, help="files in the own-CPU case (default 400)")
    p.add_argument("--timeout", type=float, default=900, help="time-out of one run in the short case (default 900 s)")
    p.add_argument("--dispatch-tasks", type=int, default=4000, help="trivial tasks in the cluster case (default 4000)")
    p.add_argument(
        "--baseline",
        metavar="REF",
        action="append",
        default=[],
        help="also run this repository's flac2all as it was at git REF, side by side (before/after)",
    )
    args = p.parse_args()
    for ref in args.baseline:
        name, folder = baseline(ref)
        BASELINES[name] = folder
    compiled([Path(flac2all.__file__).parent, *(folder / "flac2all" for folder in BASELINES.values())])
    for name in args.cases:
        print(f"## {name}\n", flush=True)
        print("\n".join(CASES[name](args)) + "\n", flush=True)


if __name__ == "__main__":
    main()
