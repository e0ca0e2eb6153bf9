"""``python -m bench scale``: how the cost of a run grows with the library.

Three figures side by side at several library sizes (issue 16):

- ``--dry-run`` over new sources x 2 modes (mp3,opus): wall and peak RSS;
- a no-op re-run over an up-to-date mirror of the sources x 2 modes: wall;
- a first run: the time from the command's start to its first encoder of a
  real task (the first ``lame`` or ``opusenc`` writing into OUTDIR), then
  the run is killed.

Sources are made cheaply: hard links of 48 distinct tiny FLACs (0.2 s each,
their own audio and tags) in an artist/album/track tree (80 tracks per
artist, 10 per album); ext4 allows at most 65,000 links per file, so a seed
that is full is copied and the copy linked. The up-to-date mirrors are made
the same way: the seeds are converted once by flac2all, and each source's
outputs are links of its seed's outputs, with the state rows flac2all wrote
for the seed (same size, mtime, audio and tags: the same inode) under the
source's and output's names, written through ``State.put``.

Libraries and mirrors are kept under ``build/bench/scale`` between runs (a
``.complete`` marker each); delete it to start over. Sizes: the environment
variables ``FLAC2ALL_SCALE_SIZES`` (dry run and first run, default
20000,100000,200000,1000000) and ``FLAC2ALL_NOOP_SIZES`` (default
20000,100000,200000). ``--baseline REF`` also runs flac2all at REF, in turn.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import library
from flac2all import codecs
from flac2all.model import Settings
from flac2all.planning import names
from flac2all.records import Record
from flac2all.state import State

ROOT = library.ROOT / "scale"
SEEDS = 48
MODES = "mp3,opus"
FLAC2ALL = [sys.executable, "-m", "flac2all"]
OURS = "this flac2all"
PLOT = Path(__file__).resolve().parent.parent / "bench-scale.svg"


def sizes(variable: str, default: str) -> list[int]:
    return [int(s) for s in os.environ.get(variable, default).split(",") if s.strip()]


def rel_path(i: int) -> Path:
    """The ``i``-th source of a library: 10 tracks an album, 8 albums an artist."""
    artist, album, track = i // 80, (i // 10) % 8, i % 10 + 1
    return Path(f"Artist {artist:05d}", f"Album {album} ({1970 + (artist + album) % 50})", f"{track:02d} - Track.flac")


def seeds() -> Path:
    """The distinct tiny FLACs every library links to (made once)."""
    folder = ROOT / "seeds"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for n in range(SEEDS):
        path = folder / f"seed{n:02d}.flac"
        library.synth(path, 0.2, n)
        library.tag(path, n + 1, f"Seed album {n // 10}")
    (folder / ".complete").touch()
    return folder


class Linker:
    """Hard links of a few files, past ext4's 65,000 links per file: a file
    that is full is copied (same content and mtime) and the copy linked."""

    def __init__(self) -> None:
        self.current: dict[Path, Path] = {}

    def link(self, seed: Path, dest: Path) -> None:
        target = self.current.get(seed, seed)
        try:
            os.link(target, dest)
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            n = 1
            while (spare := seed.with_name(f"{seed.name}.{n}")).exists() and spare.stat().st_nlink > 60000:
                n += 1
            if not spare.exists():
                shutil.copy2(seed, spare)
            self.current[seed] = spare
            os.link(spare, dest)


def make_library(count: int) -> Path:
    """``count`` sources, links of the seeds (``seed i % SEEDS`` for the i-th)."""
    root = ROOT / f"lib-{count}"
    if (root / ".complete").exists():
        return root
    folder = seeds()
    shutil.rmtree(root, ignore_errors=True)
    print(f"  making a library of {count} sources in {root}", flush=True)
    linker, made = Linker(), set()
    for i in range(count):
        rel = rel_path(i)
        if rel.parent not in made:
            (root / rel.parent).mkdir(parents=True, exist_ok=True)
            made.add(rel.parent)
        linker.link(folder / f"seed{i % SEEDS:02d}.flac", root / rel)
    (root / ".complete").touch()
    return root


def make_mirror(count: int) -> tuple[Path, Path]:
    """An up-to-date mirror of ``make_library(count)`` in MODES, made by
    linking the seeds' real outputs and writing the state rows flac2all
    wrote for them under the sources' names."""
    src = make_library(count)
    out = ROOT / f"mirror-{count}"
    if (out / ".complete").exists():
        return src, out
    folder = seeds()
    seed_out = ROOT / "seeds-out"
    if not (seed_out / ".flac2all" / "state.sqlite").exists():
        subprocess.run([*FLAC2ALL, MODES, "-o", str(seed_out), str(folder)], check=True, stdout=subprocess.DEVNULL)
    with State(seed_out, folder, readonly=True) as state:
        by_seed = {(rec.source.name, rec.mode): rec for rec in state.load().values()}
    shutil.rmtree(out, ignore_errors=True)
    print(f"  making an up-to-date mirror of {count} sources in {out}", flush=True)
    selected = [codecs.resolve(m) for m in MODES.split(",")]
    settings = Settings(input_dir=src, outdir=out, modes=tuple(c.name for c in selected))
    linker, made = Linker(), set()
    with State(out, src) as state:
        for i in range(count):
            rel = rel_path(i)
            seed_name = f"seed{i % SEEDS:02d}.flac"
            for codec in selected:
                rec = by_seed[(seed_name, codec.name)]
                output = names.output_path(rel, codec, settings, codec.extension)
                if output.parent not in made:
                    output.parent.mkdir(parents=True, exist_ok=True)
                    made.add(output.parent)
                linker.link(rec.output, output)
                made_rec = Record(
                    output, src / rel, codec.name, rec.facts, rec.settings_hash, rec.out_size, rec.out_mtime_ns
                )
                state.put(made_rec)
    (out / ".complete").touch()
    return src, out


@dataclass
class Measure:
    wall: float
    rss_mb: float
    cpu: float  # user + system seconds: less sensitive than the wall to a loaded machine


HELPER = r"""
import os, subprocess, sys, time, json
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.communicate()[1]
wall = time.perf_counter() - t0
import resource
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
out = {"rc": proc.returncode, "wall": wall, "rss_kb": ru.ru_maxrss, "cpu": ru.ru_utime + ru.ru_stime}
print(json.dumps({**out, "err": err.decode(errors="replace")[-2000:]}))
"""


def run_measured(argv: list[str], env: dict | None = None) -> Measure:
    """Wall and peak RSS (``getrusage(RUSAGE_CHILDREN)`` in a fresh helper
    process, whose only child is the command) of a command that must succeed."""
    import json

    out = subprocess.run([sys.executable, "-c", HELPER, *argv], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout)
    if got["rc"] != 0:
        raise SystemExit(f"failed ({got['rc']}): {' '.join(argv)}\n{got['err']}")
    return Measure(got["wall"], got["rss_kb"] / 1024, got["cpu"])


SHIM = """#!/bin/sh
case "$*" in *"{mark}"*) [ -e "{log}" ] || date +%s.%N > "{log}" ;; esac
exec {real} "$@"
"""


def first_encoder(argv: list[str], outdir: Path, env: dict, timeout: float = 1800) -> float:
    """Seconds from starting a first run to its first encoder of a task
    (an ``lame``/``opusenc`` whose argv names OUTDIR; the run's probes and
    its check of the options write elsewhere), then the run is killed."""
    with tempfile.TemporaryDirectory(prefix="flac2all-shims-") as tmp:
        mark = Path(tmp) / "first"
        for program in ("lame", "opusenc"):
            real = shutil.which(program)
            shim = Path(tmp) / program
            shim.write_text(SHIM.format(mark=outdir, log=mark, real=real))
            shim.chmod(0o755)
        env = {**env, "PATH": f"{tmp}:{env.get('PATH', os.environ['PATH'])}"}
        t0 = time.time()
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
        )
        try:
            while not mark.exists() or not mark.read_text().strip():
                if proc.poll() is not None:
                    raise SystemExit(f"the run ended ({proc.returncode}) before any encoder: {' '.join(argv)}")
                if time.time() - t0 > timeout:
                    raise SystemExit(f"no encoder within {timeout} s: {' '.join(argv)}")
                time.sleep(0.02)
            return float(mark.read_text()) - t0
        finally:
            with_killed(proc)


def with_killed(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def subjects(args) -> dict[str, Path | None]:
    """This flac2all, and the --baseline trees main() prepared (the bench's
    ``__main__`` module holds them)."""
    main = sys.modules.get("__main__")
    return {OURS: None, **getattr(main, "BASELINES", {})}


def argv_for(argv: list[str], folder: Path | None) -> list[str]:
    return argv if folder is None else ["env", "-C", str(folder), f"PYTHONPATH={folder}", *argv]


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def case_scale(args) -> list[str]:
    """Dry run, no-op re-run and first encoder at several library sizes."""
    tools = subjects(args)
    big = sizes("FLAC2ALL_SCALE_SIZES", "20000,100000,200000,1000000")
    small = sizes("FLAC2ALL_NOOP_SIZES", "20000,100000,200000")
    free = shutil.disk_usage(ROOT.parent if ROOT.parent.exists() else "/")
    print(f"  free disk: {free.free / 1e9:.1f} GB", flush=True)
    env = {**os.environ}
    dry: dict[tuple[str, int], list[Measure]] = {}
    noop: dict[tuple[str, int], list[Measure]] = {}
    first: dict[tuple[str, int], list[float]] = {}
    for count in big:
        src = make_library(count)
        out = ROOT / f"dry-out-{count}"  # never made: a dry run writes nothing
        for _ in range(args.repeat):
            for name, folder in tools.items():
                argv = argv_for([*FLAC2ALL, MODES, "--dry-run", "-o", str(out), str(src)], folder)
                dry.setdefault((name, count), []).append(run_measured(argv, env))
                print(f"  dry run {count} {name}: {dry[(name, count)][-1]}", flush=True)
    for count in small:
        src, out = make_mirror(count)
        for _ in range(args.repeat):
            for name, folder in tools.items():
                argv = argv_for([*FLAC2ALL, MODES, "-o", str(out), str(src)], folder)
                noop.setdefault((name, count), []).append(run_measured(argv, env))
                skipped = (out / "conversion_results.log").read_text().count("(skipped: up to date)")
                if skipped != 2 * count:
                    raise SystemExit(f"the no-op re-run of {count} sources skipped {skipped} tasks, not {2 * count}")
                print(f"  no-op {count} {name}: {noop[(name, count)][-1]}", flush=True)
    for count in big:
        src = make_library(count)
        for _ in range(args.repeat):
            for name, folder in tools.items():
                out = ROOT / f"first-out-{count}"
                shutil.rmtree(out, ignore_errors=True)
                argv = argv_for([*FLAC2ALL, MODES, "-o", str(out), str(src)], folder)
                try:
                    first.setdefault((name, count), []).append(first_encoder(argv, out, env))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                print(f"  first encoder {count} {name}: {first[(name, count)][-1]:.3f} s", flush=True)
    rows = [
        f"Sources: hard links of {SEEDS} tiny FLACs in artist/album/track folders; modes {MODES}; "
        f"{args.repeat} runs each, median (min-max).",
        "",
        "| tool | sources | dry run wall s | dry run CPU s | dry run peak RSS MB | no-op re-run wall s "
        "| no-op CPU s | no-op peak RSS MB | first encoder after s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in tools:
        for count in sorted(set(big) | set(small)):
            d, n, f = dry.get((name, count), []), noop.get((name, count), []), first.get((name, count), [])
            rows.append(
                f"| {name} | {count} | {fmt([m.wall for m in d])} | {fmt([m.cpu for m in d])} "
                f"| {fmt([m.rss_mb for m in d], 0)} | {fmt([m.wall for m in n])} | {fmt([m.cpu for m in n])} "
                f"| {fmt([m.rss_mb for m in n], 0)} | {fmt(f)} |"
            )
    plot(tools, big, small, dry, noop, first)
    rows.append(f"\nPlot: {PLOT.name}")
    return rows


def plot(tools, big, small, dry, noop, first) -> None:
    """Cost against library size, one panel per figure (the CPU beside the
    wall: on a shared machine the wall carries the load), as an SVG beside
    BENCHMARKS.md."""
    try:
        import matplotlib

        matplotlib.use("svg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: pip install -e '.[bench]'; no plot)", flush=True)
        return
    fig, grid = plt.subplots(2, 3, figsize=(15, 8))
    axes = grid.flatten()
    panels = [
        (axes[0], "dry run: wall s", big, lambda n, t: [m.wall for m in dry.get((t, n), [])]),
        (axes[1], "dry run: CPU s", big, lambda n, t: [m.cpu for m in dry.get((t, n), [])]),
        (axes[2], "dry run: peak RSS MB", big, lambda n, t: [m.rss_mb for m in dry.get((t, n), [])]),
        (axes[3], "no-op re-run: wall s", small, lambda n, t: [m.wall for m in noop.get((t, n), [])]),
        (axes[4], "no-op re-run: CPU s", small, lambda n, t: [m.cpu for m in noop.get((t, n), [])]),
        (axes[5], "first run: first encoder after s", big, lambda n, t: first.get((t, n), [])),
    ]
    for ax, title, counts, values in panels:
        for name in tools:
            xs = [n for n in counts if values(n, name)]
            ys = [statistics.median(values(n, name)) for n in xs]
            if xs:
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("sources (x 2 modes)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(PLOT, metadata={"Date": None})
    plt.close(fig)
