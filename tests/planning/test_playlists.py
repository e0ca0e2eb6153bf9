"""Playlists rewritten for the outputs: their encoding kept, entries outside
the library dropped."""

from __future__ import annotations

from tests.conftest import make_flac, run_flac2all, status_by_name
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


def test_a_playlist_linked_out_of_the_library_or_not_text_is_not_read(tmp_path):
    lib = tmp_path / "lib"
    make_flac(lib / "A" / "one.flac", seconds=0.15)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nsecret line two\n")
    (lib / "passwd.m3u").symlink_to(secret)
    (lib / "binary.m3u").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\nsecret-ish\n")
    out = tmp_path / "out"
    result = run_flac2all("mp3", "--playlists", "-o", out, lib, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    for text in (result.stdout, result.stderr, (out / "conversion_results.log").read_text()):
        assert "root:x" not in text and "secret" not in text.replace(str(secret), "")
    status = status_by_name(out)
    assert status["passwd.m3u"] == f"ERROR: not read: a link to {secret}, outside the input folder"
    assert status["binary.m3u"] == "ERROR: not a playlist: binary data, not text"
    assert not (out / "mp3" / "passwd.m3u").exists() and not (out / "mp3" / "binary.m3u").exists()
