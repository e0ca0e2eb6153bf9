"""``python -m bench.watch_idle``: what --watch costs while nothing changes.

An up-to-date mirror of ``--count`` sources (``bench.scale``'s library: 10
tracks an album, so 100,000 sources are 10,000 album folders and 1,250
artist folders) is watched: ``flac2all mp3,opus -o MIRROR LIBRARY --watch
-q``. Once its first run (a no-op re-run) is over, the watcher is left
alone for ``--seconds``: its resident memory, the CPU seconds it used in
that time, and the inotify watches it holds are read from /proc; then one
rescan of the library (the folders' listings) is timed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import scale
from flac2all.face.watch import snapshot
from flac2all.state import STATE_DIR


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inotify_watches(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += fd.read_text().count("inotify wd:")
        except OSError:
            pass
    return count


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.watch_idle", description=__doc__)
    p.add_argument("--count", type=int, default=100_000, help="sources in the library (default 100000)")
    p.add_argument("--seconds", type=float, default=120.0, help="how long it is left idle (default 120)")
    args = p.parse_args()
    src, out = scale.make_mirror(args.count)
    folders = sum(1 for _ in os.walk(src))
    summary = out / STATE_DIR / "last-summary.txt"
    began = time.time()
    argv = [*scale.FLAC2ALL, scale.MODES, "-o", str(out), str(src), "--watch", "-q"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        while not (summary.exists() and summary.stat().st_mtime > began):
            if proc.poll() is not None:
                raise SystemExit(f"the watcher ended ({proc.returncode})")
            time.sleep(0.5)
        first_run = time.time() - began
        time.sleep(5)  # the first run's last writes, the watches set
        rss_before, cpu_before = status_kb(proc.pid, "VmRSS"), cpu_seconds(proc.pid)
        time.sleep(args.seconds)
        rss_after, cpu_after = status_kb(proc.pid, "VmRSS"), cpu_seconds(proc.pid)
        peak, watches = status_kb(proc.pid, "VmHWM"), inotify_watches(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    load = os.getloadavg()[0]
    print(f"library: {args.count} sources in {folders} folders ({src}); first run (no-op) {first_run:.1f} s")
    print(f"inotify watches held: {watches}")
    print(f"resident memory idle: {rss_before / 1024:.1f} MB, {rss_after / 1024:.1f} MB {args.seconds:g} s later")
    print(f"peak resident memory (the first run's): {peak / 1024:.1f} MB")
    used = cpu_after - cpu_before
    print(f"CPU idle: {used:.2f} s in {args.seconds:g} s ({100 * used / args.seconds:.3f}%); load average {load:.2f}")
    cpu, wall = time.process_time(), time.perf_counter()
    snapshot(src, frozenset())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"one rescan (every --rescan-every, and before each batch): {cpu:.2f} s CPU, {wall:.2f} s wall")


if __name__ == "__main__":
    sys.exit(main())
