"""A damaged state (a bad page, not a database, a schema from the future)
is a warning: the state is moved aside and rebuilt, nothing re-encoded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.running.folders import listing, run, statuses


def corrupt(state: Path, how: str) -> None:
    if how == "damaged page":
        # The outputs table's root page, in the middle of the file.
        db = sqlite3.connect(f"file:{state}?immutable=1", uri=True)
        page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outputs'").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        db.close()
        assert 0 < (page - 1) * size < state.stat().st_size - size
        with open(state, "r+b") as f:
            f.seek((page - 1) * size)
            f.write(b"\xde\xad\xbe\xef" * 16)
    elif how == "not a database":
        state.write_bytes(b"this is not a database\n" * 200)
    elif how == "schema from the future":
        db = sqlite3.connect(state)
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, reason, aside",
    [
        ("damaged page", "malformed", "corrupt"),
        ("not a database", "not a database", "corrupt"),
        ("schema from the future", "newer flac2all, schema 99", "newer"),
    ],
)
def test_an_unreadable_state_is_moved_aside_and_rebuilt_without_reencoding(lib, mirrored, spy, how, reason, aside):
    state = mirrored / ".flac2all" / "state.sqlite"
    corrupt(state, how)
    damaged = state.read_bytes()
    before = listing(mirrored)
    dry, started = run(lib, mirrored, spy, "--dry-run")
    assert dry.returncode == 0 and "skip    8" in dry.stdout and "Traceback" not in dry.stderr
    assert "WARNING: the state" in dry.stderr and reason in dry.stderr and "only a cache" in dry.stderr
    assert listing(mirrored) == before and started == []  # the dry run leaves it where it is

    result, started = run(lib, mirrored, spy)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("WARNING: the state")]
    assert len(warning) == 1 and reason in warning[0] and "only a cache" in warning[0] and "rebuilds" in warning[0]
    assert started == []  # every output adopted by its provenance tag
    assert statuses(result) == {"SUCCESS (skipped: unchanged)"}
    moved = [p for p in state.parent.iterdir() if p.name.startswith(f"state.sqlite.{aside}-")]
    assert len(moved) == 1 and moved[0].read_bytes() == damaged and moved[0].name in warning[0]

    again, started = run(lib, mirrored, spy)
    assert again.returncode == 0 and again.stderr == "" and started == []
    assert statuses(again) == {"SUCCESS (skipped: up to date)"}
