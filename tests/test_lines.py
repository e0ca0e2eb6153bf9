"""What a person reads of the tasks: file names whose control characters
(an ESC sequence, a carriage return, a newline) are shown escaped, never
sent to the terminal."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_flac, read_log, run_flac2all

HOSTILE = ("\x1b[2J\x1b[31mred", "cr\rback", "two\nlines")


def test_control_characters_in_names_are_escaped_in_every_line(tmp_path):
    root = tmp_path / "in"
    for i, name in enumerate(HOSTILE):
        make_flac(root / f"{name} {i}.flac")
    (root / "broken\x1b]0;title\x07.flac").write_bytes(b"not a flac")
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-o", out, root, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    for text in (run.stdout, run.stderr):
        assert not any(c in text for c in "\x1b\r\x07"), text
    lines = run.stdout.splitlines()
    for name in (r"\x1b[2J\x1b[31mred 0", r"cr\x0dback 1", r"two\x0alines 2"):
        assert sum(line.startswith("encoded  mp3") and f"{name}.flac -> " in line for line in lines) == 1, lines
    assert any(line.startswith("FAILED   mp3") and r"broken\x1b]0;title\x07.flac: " in line for line in lines), lines
    # The log keeps the names as they are.
    sources = {Path(r["infile"]).name for r in read_log(out)}
    assert {f"{name} {i}.flac" for i, name in enumerate(HOSTILE)} <= sources
