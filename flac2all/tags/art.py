"""Covers scaled down for a device (--art-max-size), with Pillow.

A picture whose longest side is within the limit is kept byte for byte (as
is one Pillow cannot read). A larger one is scaled down, its aspect ratio
kept, to a baseline JPEG (what every player shows; progressive JPEGs are
not) at a quality that leaves no visible loss; a PNG stays PNG only when
that is smaller (flat artwork) or when a file's name says PNG
(``keep_format``: a copied cover.png).
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass

from mutagen.flac import Picture

log = logging.getLogger("flac2all")

JPEG_QUALITY = 88


@dataclass(frozen=True)
class Scaled:
    data: bytes
    mime: str
    width: int
    height: int
    depth: int


@functools.lru_cache(maxsize=16)  # one cover, several outputs of one source (and its album)
def scaled(data: bytes, max_size: int, keep_format: bool = False) -> Scaled | None:
    """``data`` scaled to at most ``max_size`` pixels on its longest side;
    None when it is small enough already, or not an image Pillow reads."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) <= max_size:
                return None
            source_format = image.format
            image.draft("RGB", (max_size, max_size))  # a JPEG decoded at a fraction of its size: faster
            image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
            small = flattened(image)
    except Exception as exc:  # Pillow raises many kinds for a file it cannot read
        log.debug("picture not scaled (%s): kept as it is", exc)
        return None
    jpeg = encoded(small, "JPEG")
    if source_format == "PNG":
        png = encoded(small, "PNG")
        if keep_format or len(png) < len(jpeg):
            return Scaled(png, "image/png", *small.size, 8 * len(small.getbands()))
    if keep_format and source_format not in ("JPEG", "MPO"):
        return None  # a format we do not write: a copy keeps it as it is
    return Scaled(jpeg, "image/jpeg", *small.size, 8 * len(small.getbands()))


def flattened(image):
    """RGB or grayscale, transparency laid on white (JPEG has no alpha)."""
    from PIL import Image

    if image.mode in ("RGB", "L"):
        return image.copy()
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def encoded(image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=False)
    else:
        image.save(out, "PNG", optimize=True)
    return out.getvalue()


def scaled_pictures(pictures: tuple[Picture, ...], max_size: int) -> tuple[Picture, ...]:
    """Embedded pictures, each larger one scaled down (the others as they are)."""
    out = []
    for pic in pictures:
        small = scaled(pic.data, max_size)
        if small is None:
            out.append(pic)
            continue
        new = Picture()
        new.type, new.desc, new.mime, new.data = pic.type, pic.desc, small.mime, small.data
        new.width, new.height, new.depth, new.colors = small.width, small.height, small.depth, 0
        out.append(new)
    return tuple(out)
