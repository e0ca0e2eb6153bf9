"""Sources that are not regular files: each fails with its real cause, and
nothing blocks on a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import make_flac, read_log, run_flac2all


def test_special_files_named_flac_fail_with_their_real_cause(tmp_path):
    src = tmp_path / "in"
    make_flac(src / "good.flac", seconds=0.2)
    os.mkfifo(src / "fifo.flac")  # no writer: opening it to read would block
    (src / "urandom.flac").symlink_to("/dev/urandom")
    (src / "empty.flac").write_bytes(b"")
    out = tmp_path / "out"
    run = run_flac2all("mp3,flac", "-o", out, src, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    rows: dict[str, set[str]] = {}
    for row in read_log(out):
        rows.setdefault(Path(row["infile"]).name, set()).add(row["conversion_status"])
    assert rows == {
        "good.flac": {"SUCCESS"},
        "fifo.flac": {"ERROR: not a regular file (FIFO)"},
        "urandom.flac": {"ERROR: not a regular file (character device)"},
        "empty.flac": {"ERROR: not a FLAC file (empty, 0 bytes)"},
    }
