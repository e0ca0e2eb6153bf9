"""Playlists rewritten for the outputs: their encoding kept, entries outside
the library dropped."""

from __future__ import annotations

from tests.conftest import make_flac
from tests.planning.device import run


def test_playlists_keep_their_encoding_and_drop_what_is_outside(tmp_path, spy):
    lib = tmp_path / "lib"
    make_flac(lib / "Ä" / "one.flac", seconds=0.15)
    (lib / "old.m3u").write_bytes("#EXTM3U\r\nÄ\\one.flac\r\n/elsewhere/x.flac\r\n".encode("cp1252"))
    result, _ = run(lib, tmp_path / "out", spy, "--playlists")
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "out" / "opus" / "old.m3u").read_bytes()
    assert written == "#EXTM3U\r\nÄ/one.opus\r\n".encode("cp1252")
    assert "/elsewhere/x.flac dropped" in result.stderr
