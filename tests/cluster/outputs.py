"""What every cluster run must leave: one good output per task, none lost, none twice, no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import decodes, duration, read_log, source_length, temp_files


def check_outputs(out: Path, lib: Path, modes: dict[str, str]) -> list[dict]:
    rows = read_log(out)
    sources = sorted(lib.rglob("*.flac"))
    assert len(rows) == len(sources) * len(modes)  # one row per task: none lost, none twice
    assert all(r["conversion_status"].startswith("SUCCESS") for r in rows), rows
    for src in sources:
        for mode, ext in modes.items():
            output = out / mode / src.relative_to(lib).with_suffix(ext)
            assert decodes(output)
            assert duration(output) == pytest.approx(source_length(src), abs=0.08)
    assert temp_files(out) == []
    return rows
