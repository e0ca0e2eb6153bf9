"""The programs flac2all needs: found on PATH, or said missing before any
work, with the system's own installer."""

from __future__ import annotations

import shutil
import subprocess
import sys

from flac2all import tools


def test_the_install_hint_names_the_systems_own_installer():
    assert tools.install_hint(["oggenc"], "linux") == "install the Debian package: apt-get install vorbis-tools"
    assert tools.install_hint(["oggenc"], "freebsd14") == "install the package: pkg install vorbis-tools"
    assert tools.install_hint(["oggenc", "flac", "metaflac"], "freebsd14") == (
        "install the packages: pkg install vorbis-tools flac"
    )


def test_every_missing_encoder_is_named_in_one_line_with_one_apt_get(library, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "flac").symlink_to(shutil.which("flac"))  # lame, opusenc and ffmpeg missing
    argv = [sys.executable, "-m", "flac2all", "mp3,opus,aac,vorbis", "-o", str(tmp_path / "out"), str(library)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": str(bin_dir)})
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    for needs in ("mode mp3 needs 'lame'", "mode opus needs 'opusenc'", "mode aac needs 'ffmpeg'", "'oggenc'"):
        assert needs in line
    assert line.endswith("(install the Debian packages: apt-get install lame opus-tools ffmpeg vorbis-tools)")
    assert not (tmp_path / "out").exists()
