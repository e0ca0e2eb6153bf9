"""Covers scaled down for a device (--art-max-size), with Pillow.

A picture whose longest side is within the limit is kept byte for byte. A
larger one is scaled down, its aspect ratio kept, to a baseline JPEG (what every player shows; progressive JPEGs are
not) at a quality that leaves no visible loss; a PNG stays PNG only when
that is smaller (flat artwork) or when a file's name says PNG
(``keep_format``: a copied cover.png). One that cannot be scaled (more
pixels than Pillow decodes, a decompression bomb; not an image Pillow reads;
a copy in a format it does not write) is kept byte for byte, with a warning
saying why (``Unscaled``).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

from mutagen.flac import Picture

JPEG_QUALITY = 88


@dataclass(frozen=True)
class Scaled:
    data: bytes
    mime: str
    width: int
    height: int
    depth: int


@dataclass(frozen=True)
class Unscaled:
    """A picture that may be larger than the limit, kept as it is: why."""

    why: str


@functools.lru_cache(maxsize=16)  # one cover, several outputs of one source (and its album)
def scaled(data: bytes, max_size: int, keep_format: bool = False) -> Scaled | Unscaled | None:
    """``data`` scaled to at most ``max_size`` pixels on its longest side;
    None when it is small enough already; Unscaled when it cannot be."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns of a picture of up to twice its pixel limit:
            # one that large is refused as well (it would take GBs to decode).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if max(image.size) <= max_size:
                    return None
                source_format = image.format
                image.draft("RGB", (max_size, max_size))  # a JPEG decoded at a fraction of its size: faster
                image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
                small = flattened(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Unscaled(f"too large to scale ({exc})")
    except UnidentifiedImageError:
        return Unscaled("not an image Pillow reads")
    except Exception as exc:  # Pillow raises many kinds for a file it cannot decode
        return Unscaled(f"cannot be scaled ({type(exc).__name__}: {exc})")
    jpeg = encoded(small, "JPEG")
    if source_format == "PNG":
        png = encoded(small, "PNG")
        if keep_format or len(png) < len(jpeg):
            return Scaled(png, "image/png", *small.size, 8 * len(small.getbands()))
    if keep_format and source_format not in ("JPEG", "MPO"):
        return Unscaled(f"{source_format} is not a format it writes")  # a copy keeps its own
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


def scaled_pictures(pictures: tuple[Picture, ...], max_size: int) -> tuple[tuple[Picture, ...], list[str]]:
    """Embedded pictures, each larger one scaled down (the others as they
    are), and warnings for those that could not be."""
    out, warnings = [], []
    for pic in pictures:
        small = scaled(pic.data, max_size)
        if not isinstance(small, Scaled):
            out.append(pic)
            if small is not None:
                warnings.append(f"picture '{pic.desc}' ({pic.mime}) kept as it is, not scaled: {small.why}")
            continue
        new = Picture()
        new.type, new.desc, new.mime, new.data = pic.type, pic.desc, small.mime, small.data
        new.width, new.height, new.depth, new.colors = small.width, small.height, small.depth, 0
        out.append(new)
    return tuple(out), warnings
