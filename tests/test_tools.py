"""The probes of external programs and what a missing one's error says."""

from __future__ import annotations

from flac2all import tools


def test_the_install_hint_names_the_systems_own_installer():
    assert tools.install_hint("oggenc", "linux") == "install the Debian package: apt-get install vorbis-tools"
    assert tools.install_hint("oggenc", "freebsd14") == "install the package: pkg install vorbis-tools"
