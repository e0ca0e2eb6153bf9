"""``python -m bench master``: the cluster master at scale (issue 16).

100,000 trivial tasks (copies of tiny files, -c) handed to 32 worker
processes on loopback (8 worker hosts of 4 processes: this machine has 2
cores, so the workers are many processes, not fast ones): the master's CPU
per task, its peak RSS, and the dispatch rate. The same master over 10,000
tasks gives the memory per task (the slope between the two), and a dry run
over the same sources (which plans and stops) the plan's own share of it.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import library

TASKS = 100_000
SMALLER = 10_000
HOSTS, PROCESSES = 8, 4
# flac2all, saying its own peak RSS (VmHWM) as it exits: the ru_maxrss of
# a wait4 is the largest of its children's too (an ffmpeg probe is as large
# as a small master), and even its own keeps the high-water mark of the
# process it was forked from (Linux records it at exec): this bench's.
FLAC2ALL = [
    sys.executable,
    "-c",
    "import atexit, re, runpy, sys\n"
    "atexit.register(lambda: print('peak RSS KiB', re.search(r'VmHWM:\\s+(\\d+)',"
    " open('/proc/self/status').read())[1], file=sys.stderr, flush=True))\n"
    "sys.argv[0] = 'flac2all'\n"
    "runpy.run_module('flac2all', run_name='__main__', alter_sys=True)",
]
PEAK = re.compile(r"peak RSS KiB (\d+)")


def sources(count: int) -> Path:
    """``count`` tiny files in folders of 100, made once (the marker says
    they are complete) and reused."""
    src = library.ROOT / f"tiny-{count}"
    marker = src.with_name(src.name + ".complete")  # outside: -c would copy it
    if not marker.exists():
        print(f"  making {count} tiny sources in {src} once", flush=True)
        shutil.rmtree(src, ignore_errors=True)
        for i in range(count):
            path = src / f"d{i // 100:04d}" / f"f{i:06d}.txt"
            if i % 100 == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(i))
        marker.touch()
    return src


def scratch(name: str) -> Path:
    """Outputs on a tmpfs when there is one (see cluster_of in __main__)."""
    root = Path("/dev/shm") if os.path.ismount("/dev/shm") else library.ROOT
    out = root / f"flac2all-bench-master-{name}"
    shutil.rmtree(out, ignore_errors=True)
    return out


def one_run(count: int, folder: Path | None) -> dict[str, float]:
    """One master over ``count`` tasks with HOSTS x PROCESSES workers (this
    flac2all, or the package in ``folder``: a --baseline): its CPU s, peak
    RSS (KiB), and the dispatch rate."""
    from bench.__main__ import Lines, with_pythonpath  # (bench.__main__ imports this module)

    src = sources(count)
    out = scratch(str(count))
    argv = [*FLAC2ALL, "mp3", "-m", "--bind", "127.0.0.1", "--port", "0", "--insecure", "-c", "--allow-empty"]
    m = Lines(with_pythonpath([*argv, "-o", str(out), str(src)], folder), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _, found = m.when(r"Listening on tcp://127\.0\.0\.1:(\d+)")
    port = int(found.group(1))
    worker = [sys.executable, "-m", "flac2all.cluster.worker", "127.0.0.1", "--port", str(port), "-t", str(PROCESSES)]
    worker += ["--insecure", "--allow", str(library.ROOT), "--allow", "/dev/shm"]  # (baselines with --insecure only)
    hosts = [Lines(with_pythonpath(worker, folder)) for _ in range(HOSTS)]
    try:
        start, _ = m.when(r"Commencing run", 120)
        while (got := os.wait4(m.proc.pid, os.WNOHANG))[0] == 0:
            time.sleep(0.05)
        _, status, usage = got
        m.proc.returncode = os.waitstatus_to_exitcode(status)
        m.thread.join(10)
        end = next(t for t, line in reversed(m.lines) if not PEAK.search(line))
    finally:
        m.stop()
        for w in hosts:
            w.stop()
        shutil.rmtree(out, ignore_errors=True)
    copied = sum(1 for _, line in m.lines if line.startswith("copied "))
    if m.proc.returncode != 0 or copied != count:
        raise SystemExit(f"master exit {m.proc.returncode}, {copied} of {count} tasks done")
    rss = int(next(found.group(1) for _, line in m.lines if (found := PEAK.search(line))))
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": rss, "rate": count / (end - start)}


def dry_rss(count: int, folder: Path | None) -> float:
    """Peak RSS (KiB) of a dry run over the same sources: the plan, and the
    process it lives in."""
    out = scratch(f"dry-{count}")
    argv = [*FLAC2ALL, "mp3", "-c", "--allow-empty", "--dry-run", "-o", str(out), str(sources(count))]
    from bench.__main__ import with_pythonpath

    proc = subprocess.run(with_pythonpath(argv, folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0 or not (found := PEAK.search(proc.stderr)):
        raise SystemExit(f"dry run failed: {proc.stderr[-2000:]}")
    return int(found.group(1))


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def case_master(args) -> list[str]:
    """The master measures for this flac2all, then for each --baseline."""
    from bench.__main__ import OURS, baseline

    rows = []
    # (bench.__main__ as imported here is another module than the one that
    # runs, whose BASELINES are filled: the folders are made again, cached.)
    for name, folder in {OURS: None, **dict(baseline(ref) for ref in args.baseline)}.items():
        rows += [f"{name}:", "", *master_of(args, folder), ""]
    return rows


def master_of(args, folder: Path | None) -> list[str]:
    """The master at 100,000 trivial tasks and 32 worker processes, with a
    run of 10,000 and dry runs of both beside it (alternating)."""
    runs: dict[int, list[dict[str, float]]] = {TASKS: [], SMALLER: []}
    dry: dict[int, list[float]] = {TASKS: [], SMALLER: []}
    for _ in range(args.repeat):
        for count in (TASKS, SMALLER):
            runs[count].append(one_run(count, folder))
            dry[count].append(dry_rss(count, folder))
    big, small = runs[TASKS], runs[SMALLER]
    rss_mb = {n: [r["rss"] / 1024 for r in runs[n]] for n in runs}
    dry_mb = {n: [v / 1024 for v in dry[n]] for n in dry}
    span = TASKS - SMALLER
    # Per task, beyond the plan: the master's growth less the dry run's, per round.
    per_task = [
        1024 * ((b["rss"] - s["rss"]) - (db - ds)) / span
        for b, s, db, ds in zip(big, small, dry[TASKS], dry[SMALLER], strict=True)
    ]
    master_task = [1024 * (b["rss"] - s["rss"]) / span for b, s in zip(big, small, strict=True)]
    return [
        f"Cluster master, trivial tasks (copies of tiny files, -c, into a tmpfs), {HOSTS} worker hosts x "
        f"{PROCESSES} processes = {HOSTS * PROCESSES} worker processes, all on this {os.cpu_count()}-core "
        "machine, loopback; CPU and peak RSS from the master's own rusage:",
        "",
        "| measure | median (min-max) |",
        "|---|---|",
        f"| {TASKS} tasks: master CPU per task, ms (start-up and planning included) | "
        f"{stats([1000 * r['cpu'] / TASKS for r in big])} |",
        f"| {SMALLER} tasks: master CPU per task, ms | {stats([1000 * r['cpu'] / SMALLER for r in small])} |",
        f"| {TASKS} tasks: dispatch rate, tasks/s (first worker joined -> last result) | "
        f"{stats([r['rate'] for r in big])} |",
        f"| {TASKS} tasks: master peak RSS, MB | {stats(rss_mb[TASKS])} |",
        f"| {SMALLER} tasks: master peak RSS, MB | {stats(rss_mb[SMALLER])} |",
        f"| dry run (the plan alone), {TASKS} / {SMALLER} tasks: peak RSS, MB | "
        f"{stats(dry_mb[TASKS])} / {stats(dry_mb[SMALLER])} |",
        f"| master memory per task, bytes ((RSS at {TASKS} - at {SMALLER}) / {span}) | {stats(master_task)} |",
        f"| of which beyond the plan (less the dry run's growth), bytes | {stats(per_task)} |",
    ]
