"""Deterministic benchmark libraries, made with sox, flac and mutagen.

Sources are built once and cached under build/bench (delete it to rebuild).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mutagen.flac import FLAC

ROOT = Path(__file__).resolve().parent.parent / "build" / "bench"


def synth(path: Path, seconds: float, seed: int) -> None:
    """Real-sounding content: a chord of tones over coloured noise, varied by seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f1, f2 = 110 + (seed * 37) % 660, 220 + (seed * 53) % 880
    noise = ("pinknoise", "brownnoise", "whitenoise")[seed % 3]
    subprocess.run(
        [
            "sox",
            "-V1",
            "-n",
            "-r",
            "44100",
            "-b",
            "16",
            "-c",
            "2",
            str(path),
            "synth",
            f"{seconds}",
            "sine",
            str(f1),
            "sine",
            str(f2),
            noise,
            "vol",
            "0.5",
            "remix",
            "1,2",
            "1,3",
        ],
        check=True,
    )


def tag(path: Path, n: int, album: str) -> None:
    f = FLAC(path)
    f.tags.clear() if f.tags is not None else f.add_tags()
    f.update({"TITLE": f"Track {n}", "ARTIST": "Bench", "ALBUM": album, "TRACKNUMBER": str(n), "DATE": "2026"})
    f.save()


def many_short(count: int, seconds: float = 1.0, name: str | None = None) -> Path:
    """``count`` short files, 20 per folder; one file synthesized, the rest
    copies with their own tags (what matters here is per-task overhead)."""
    root = ROOT / (name or f"short-{count}x{seconds:g}s")
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    seed_file = root.parent / f"seed-{seconds:g}s.flac"
    synth(seed_file, seconds, 1)
    for i in range(count):
        path = root / f"album{i // 20:04d}" / f"{i:05d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(seed_file, path)
        tag(path, i % 20 + 1, f"Album {i // 20}")
    marker.touch()
    return root


def full_length(total_minutes: float = 30.0) -> Path:
    """About ``total_minutes`` of audio in tracks of 2 to 7 minutes."""
    root = ROOT / f"full-{total_minutes:g}min"
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    remaining, n = total_minutes * 60, 0
    while remaining > 1:
        seconds = min(remaining, 120 + (n * 97) % 300)
        path = root / f"album{n // 4}" / f"{n:02d}.flac"
        synth(path, seconds, n)
        tag(path, n + 1, f"Album {n // 4}")
        remaining -= seconds
        n += 1
    marker.touch()
    return root
