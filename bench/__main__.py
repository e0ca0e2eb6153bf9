"""Benchmarks: ``python -m bench CASE [...]``; see BENCHMARKS.md.

Every figure is measured side by side in one run (this machine is shared and
noisy): runs alternate, and medians with min-max are reported.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mutagen.flac import FLAC

from bench import library

FLAC2ALL = [sys.executable, "-m", "flac2all"]


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
    rows = ["| sources x modes | outputs | wall s, median (min-max) | per output |", "|---|---|---|---|"]
    results = {}
    for count in args.counts:
        src = library.many_short(count, 0.2)
        out = mirror(src, "mp3,opus")
        walls = [timed([*FLAC2ALL, "mp3,opus", "-o", str(out), str(src)]) for _ in range(args.repeat)]
        results[count] = statistics.median(walls)
        rows.append(f"| {count} x 2 | {2 * count} | {stats(walls)} | {1000 * results[count] / (2 * count):.3f} ms |")
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


CASES: dict[str, Callable] = {"noop": case_noop, "retag": case_retag}


def main() -> None:
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
    args = p.parse_args()
    for name in args.cases:
        print(f"## {name}\n", flush=True)
        print("\n".join(CASES[name](args)) + "\n", flush=True)


if __name__ == "__main__":
    main()
