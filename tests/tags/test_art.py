"""--art-max-size with pictures that cannot be scaled: a decompression bomb
(a PNG that claims 60000x60000 pixels in a few bytes), embedded or as
cover.png, is kept as it is and every result says so, never "small enough"."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from mutagen.flac import Picture
from PIL import Image

from flac2all.tags import art
from tests.conftest import make_flac, mutagen_file, read_log, run_flac2all


def bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A grayscale PNG header claiming ``width`` x ``height`` pixels, with a
    tiny compressed row of data: what Pillow sees before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_what_cannot_be_scaled_says_why():
    assert art.scaled(png(100), 300) is None  # small enough
    assert isinstance(art.scaled(png(400), 300), art.Scaled)
    for data in (bomb(), bomb(10000, 10000)):  # over Pillow's limit; over half of it (it only warns)
        unscaled = art.scaled(data, 300)
        assert isinstance(unscaled, art.Unscaled) and unscaled.why.startswith("too large to scale"), unscaled
    assert art.scaled(b"\x89PNG fake", 300) == art.Unscaled("not an image Pillow reads")


def test_a_decompression_bomb_is_kept_saying_so(tmp_path):
    src = tmp_path / "in"
    pic = Picture()
    pic.type, pic.mime, pic.desc, pic.data = 3, "image/png", "bomb", bomb()
    make_flac(src / "a.flac", seconds=0.2, pictures=[pic])
    (src / "cover.png").write_bytes(bomb())
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus,flac", "-c", "--art-max-size", "300", "-o", out, src, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {(Path(r["outfile"]).name, r["format"]): r["conversion_status"] for r in read_log(out)}
    assert len(rows) == 6 and not any("small enough" in status for status in rows.values()), rows
    for mode in ("mp3", "opus", "flac"):
        embedded = rows[(f"a.{'mp3' if mode == 'mp3' else mode}", mode)]
        assert embedded.startswith("SUCCESS (picture 'bomb' (image/png) kept as it is, not scaled: too large to scale")
        assert rows[("cover.png", mode)].startswith("SUCCESS (copied as it is, not scaled: too large to scale")
        assert (out / mode / "cover.png").read_bytes() == bomb()
    assert [p.data for p in mutagen_file(out / "flac" / "a.flac").pictures] == [bomb()]
    assert "kept as it is, not scaled: too large to scale" in run.stderr
