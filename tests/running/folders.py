"""A mirrored library run with a spy on the encoders, and what a refusal
and an untouched folder look like."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_flac2all

MODES = "mp3,opus"


def run(lib: Path, out: Path, spy, *args: str | Path):
    folder, log = spy
    log.write_text("")
    result = run_flac2all(MODES, "-o", out, *args, lib, path_prefix=folder, timeout=60)
    started = [line.split()[0] for line in log.read_text().splitlines()]
    return result, started


def statuses(result) -> set[str]:
    return {r["conversion_status"] for r in result.rows()}


def listing(folder: Path, strict: bool = True) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (state and log included): size and mtime.
    Not ``strict``: but the mtime of the state's folder, where SQLite makes
    and removes its -wal and -shm files while a run holds the state open."""
    out = {}
    for p in [folder, *folder.rglob("*")]:
        st = p.lstat()
        loose = not strict and p == folder / ".flac2all"
        out[str(p.relative_to(folder))] = (st.st_size if not p.is_dir() else 0, 0 if loose else st.st_mtime_ns)
    return out


def one_line_error(result, *words: str) -> str:
    """The run refused with one line on stderr (no traceback), exit 2."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("flac2all: error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def unmount(lib: Path, keep: int) -> None:
    """The library as an unmounted disk shows it: ``keep`` sources left."""
    for n, flac in enumerate(sorted(lib.rglob("*.flac"))):
        if n >= keep:
            flac.unlink()
