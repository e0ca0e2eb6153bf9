"""``flac2all --version``: flac2all's version, then each encoder it found
on PATH (or "not found"), one line each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from flac2all import __version__
from tests.conftest import require

ENCODERS = ["flac", "lame", "oggenc", "opusenc", "ffmpeg"]


def version_lines(path: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "flac2all", "--version"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={**os.environ, "PATH": path},
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done
    return done.stdout.splitlines()


def first_version_line(program: str) -> str:
    flag = "-version" if program == "ffmpeg" else "--version"
    done = subprocess.run([program, flag], capture_output=True, text=True, timeout=60, check=False)
    return (done.stdout or done.stderr).splitlines()[0]


def test_version_names_every_encoder_found_on_the_real_path():
    require(*ENCODERS)
    lines = version_lines(os.environ["PATH"])
    assert lines[0] == f"flac2all {__version__}"
    assert len(lines) == 1 + len(ENCODERS)
    for program, line in zip(ENCODERS, lines[1:], strict=True):
        assert line == f"{program} ({shutil.which(program)}): {first_version_line(program)}"


def test_version_says_not_found_for_an_encoder_missing_from_path(tmp_path: Path):
    require(*ENCODERS)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ENCODERS:
        if program != "opusenc":
            (bin_dir / program).symlink_to(shutil.which(program))
    lines = version_lines(str(bin_dir))
    assert lines[0] == f"flac2all {__version__}"
    assert lines[4] == "opusenc: not found"
    assert lines[1].startswith(f"flac ({bin_dir / 'flac'}): flac ")
    assert lines[5].startswith(f"ffmpeg ({bin_dir / 'ffmpeg'}): ffmpeg version ")
