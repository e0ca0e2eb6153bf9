"""The comment header of an Ogg Vorbis or Opus output, written in time
proportional to its size.

mutagen pages a new comment packet by cutting 4 KiB off its front again and
again, copying the rest each time: quadratic in the packet's size. Pictures
travel in that packet (base64 METADATA_BLOCK_PICTURE comments), so four
13 MB covers took minutes for one output. Here the packet is cut into full
pages (255 segments, 64 KiB) from a memoryview, and the pages after it
renumbered once, as mutagen does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path

from mutagen._util import resize_bytes
from mutagen.ogg import OggPage

MAX_SEGMENTS = 255  # lacing values in one page, of at most 255 bytes each


def paged(packets: Sequence[bytes], serial: int, sequence: int) -> list[OggPage]:
    """Header packets in as few pages as Ogg allows, numbered from
    ``sequence``; the last page ends with the last packet."""
    pages: list[OggPage] = []
    page = new_page(serial, sequence, continued=False)
    used = 0
    for packet in packets:
        view, at = memoryview(packet), 0
        while True:
            if used == MAX_SEGMENTS:
                pages.append(page)
                page = new_page(serial, sequence + len(pages), continued=at > 0)
                used = 0
            needed = (len(view) - at) // 255 + 1  # the last lacing value is below 255: the packet ends
            if needed <= MAX_SEGMENTS - used:
                page.packets.append(bytes(view[at:]))
                page.position = 0  # a packet ends on this page (headers have granule 0)
                used += needed
                break
            take = (MAX_SEGMENTS - used) * 255
            page.packets.append(bytes(view[at : at + take]))
            page.complete = False
            at += take
            used = MAX_SEGMENTS
    pages.append(page)
    return pages


def new_page(serial: int, sequence: int, continued: bool) -> OggPage:
    page = OggPage()
    page.serial, page.sequence, page.continued = serial, sequence, continued
    page.position = -1  # until a packet ends on it
    return page


# An Ogg page header up to its segment count: capture pattern, version,
# flags, granule position, serial, sequence, CRC.
HEADER = 27


class Replaced(IntEnum):
    """What ``replace_comment`` did."""

    NOT = 0  # nothing: the file is as it was
    DONE = 1  # replaced; the pages after the headers renumbered, or not read back
    READ_BACK = 2  # replaced, read back as written, the audio pages only moved


def replace_comment(path: Path, comment: bytes, headers: int) -> Replaced:
    """Put ``comment`` in place of the comment packet of the Ogg file at
    ``path``, whose first ``headers`` packets after the identification
    header are headers (Opus: the comments; Vorbis: comments and setup).
    NOT, leaving the file as it was, when its pages are not laid out as
    an encoder writes them (the headers alone on their pages, one stream).
    READ_BACK when the header pages read back are those written and the
    page after them is the first audio page, moved and untouched, the
    file as much longer as the headers grew (as many header pages as
    before: nothing after them renumbered): the file parsed before, with
    the new comment."""
    with open(path, "r+b") as f:
        first = OggPage(f)
        old: list[OggPage] = []
        ended, previous = 0, first
        while ended < headers:
            page = OggPage(f)
            if page.serial != first.serial or page.offset != previous.offset + previous.size:
                return Replaced.NOT
            old.append(page)
            previous = page
            ended += len(page.packets) - (0 if page.complete else 1)
        if ended != headers or not old[-1].complete:
            return Replaced.NOT
        packets = OggPage.to_packets(old)
        packets[0] = comment
        new = paged(packets, first.serial, old[0].sequence)
        data = b"".join(page.write() for page in new)
        start, end = old[0].offset, old[-1].offset + old[-1].size
        after = f.read(HEADER)  # the first audio page's header, as parsed before
        size = os.fstat(f.fileno()).st_size + len(data) - (end - start)
        resize_bytes(f, end - start, len(data), start)
        f.seek(start)
        f.write(data)
        if len(new) != len(old):
            OggPage.renumber(f, first.serial, old[0].sequence + len(new))
            return Replaced.DONE
        f.flush()
        f.seek(start)
        if f.read(len(data)) != data or f.read(len(after)) != after or os.fstat(f.fileno()).st_size != size:
            return Replaced.DONE
    return Replaced.READ_BACK
