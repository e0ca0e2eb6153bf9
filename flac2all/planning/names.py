"""Where each output goes (``output_path``: the layout, ``-n``), and its
name spelled for the device a tree is written to.

``--names posix`` keeps the sources' names. ``--names fat32`` spells every
component of an output's path as FAT32 and exFAT (and Windows) take it:
the characters they reject replaced, trailing dots and spaces stripped,
reserved names (CON, NUL, ...) avoided (pathvalidate's rules for Windows),
each component within 255 UTF-16 units (and 255 bytes, the limit of the
Linux file system it is written through), the path below OUTDIR within
``--max-path``. Those file systems ignore case, so two names that differ
only in case are one name.

Two sources whose outputs would get one name get two: the second one found
gets a number (``Song (2).mp3``). Names stay as they were run after run:
an output the state records for a source is its name as long as it is
still a spelling of what the source wants, and no other source takes it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from pathvalidate import sanitize_filename

from flac2all.model import Layout, Names, Settings

if TYPE_CHECKING:
    from flac2all.codecs.base import Codec

COMPONENT_UNITS = 255  # FAT32/exFAT long names, in UTF-16 code units
COMPONENT_BYTES = 255  # NAME_MAX of Linux file systems, in bytes
NAME_RESERVE = 40  # units of --max-path kept for a file's name when its folders are too long (its least value)
LONGEST_SUFFIX = 8  # longer "extensions" are part of the name (a dot in a title)
NUMBERED = re.compile(r"^(.*) \((\d+)\)$")
UNDECODABLE = re.compile("[\udc80-\udcff]")  # a file name's bytes that were not UTF-8


def units(text: str) -> int:
    """Length in UTF-16 code units, as FAT32 counts it."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def fits(text: str, limit: int) -> bool:
    return units(text) <= limit and len(text.encode("utf-8", "surrogatepass")) <= COMPONENT_BYTES


def cut(text: str, limit: int, end: str = "") -> str:
    """``text`` shortened (at its end) until it fits ``limit`` followed by ``end``."""
    while text and not fits(text + end, limit):
        text = text[:-1]
    return text


def split(name: str) -> tuple[str, str]:
    """(stem, extension) of a file name; a long 'extension' is no extension."""
    suffix = PurePath(name).suffix
    if not suffix or len(suffix) > LONGEST_SUFFIX or suffix == name:
        return name, ""
    return name[: -len(suffix)], suffix


def component(name: str, limit: int = COMPONENT_UNITS, tag: str = "", is_file: bool = True) -> str:
    """One path component as FAT32 takes it, within ``limit`` units, with
    ``tag`` (`` (2)``) before the extension of a file ("_" if none fits)."""
    return spelling(name, limit, tag, is_file) or "_"


def spelling(name: str, limit: int, tag: str = "", is_file: bool = True) -> str | None:
    """``component``, or None when no spelling keeps ``tag`` and the
    extension within ``limit`` units."""
    name = UNDECODABLE.sub("_", name)
    stem, suffix = split(name) if is_file else (name, "")
    limit = min(limit, COMPONENT_UNITS)
    room = limit
    while room > 0:
        short = (cut(stem, room, tag + suffix) or stem[:1]) + tag + suffix
        spelled = sanitize_filename(short, replacement_text="_", platform="windows", max_len=COMPONENT_UNITS)
        # A reserved name keeps its trailing dots (AUX. -> AUX_.), which FAT32 drops: AUX_ and AUX_. are one.
        spelled = spelled.rstrip(". ")
        if spelled in ("", ".", ".."):
            spelled = "_"
        if fits(spelled, limit):
            return spelled
        room -= 1  # sanitizing made it longer (CON -> CON_): cut one more
    return None


def key(parts: Iterable[str]) -> str:
    """What the device sees as one name: case ignored."""
    return "/".join(parts).casefold()


def output_path(rel: Path, codec: Codec | None, settings: Settings, suffix: str | None) -> Path:
    """Where the output for a source at ``rel`` goes.

    ``codec`` None means a mode-less path; ``suffix`` None keeps the name as
    it is (copied files).
    """
    return output_folder(rel.parent, codec, settings) / output_name(rel, suffix)


def output_name(rel: Path, suffix: str | None) -> str:
    """The file name of ``output_path`` (``rel.with_suffix(suffix).name``,
    without making a Path)."""
    return rel.name if suffix is None else rel.stem + suffix


def output_folder(parent: Path, codec: Codec | None, settings: Settings) -> Path:
    """The folder of ``output_path`` for sources in ``parent`` (relative)."""
    if settings.layout is Layout.FLAT:
        return settings.outdir
    base = (
        settings.outdir if settings.layout is Layout.NO_MODE_DIRS or codec is None else settings.outdir / codec.folder
    )
    return base / parent


@dataclass(frozen=True)
class Unfit:
    """No name of the output fits the limits: why."""

    why: str


class Namer:
    """The output paths of one run: ``output(source, wanted)``, where
    ``wanted`` is the path with the source's own names (plan.output_path)."""

    def __init__(
        self, outdir: Path, names: Names, max_path: int, recorded: dict[Path, Path], kept: Iterable[str] = ()
    ) -> None:
        """``recorded``: output -> source, for the state's outputs whose
        source is still in the input; ``kept``: the modes' folders, which
        a path's first folder may be and which are never cut (cut to one
        letter, flac and f_alac would be one tree)."""
        self.outdir = outdir
        self.kept = frozenset(kept)
        self.fat = names is Names.FAT32
        self.max_path = max_path
        self.done: dict[tuple[Path, Path], Path] = {}
        self.taken: dict[str, Path] = {}  # key of an output -> its source
        self.reserved: dict[str, Path] = {}
        self.recorded: dict[Path, list[tuple[str, ...]]] = {}
        self.spellings: dict[str, str] = {}  # key of a folder -> its first spelling
        self.unfit: dict[str, str] = {}  # output (its text) -> why no name fits
        if self.fat:
            for output, source in recorded.items():
                try:
                    parts = output.relative_to(outdir).parts
                except ValueError:
                    continue
                self.reserved[key(parts)] = source
                self.recorded.setdefault(source, []).append(parts)

    def output(self, source: Path, wanted: Path) -> Path:
        if not self.fat:
            return wanted
        if (source, wanted) in self.done:
            return self.done[(source, wanted)]
        rel = wanted.relative_to(self.outdir)
        folder = self.folder(rel.parts[:-1])
        room = self.max_path - (units("/".join(folder)) + 1 if folder else 0)
        name = self.name(source, folder, rel.name, room)
        if isinstance(name, Unfit):
            # Its own path, claimed by no other, refused when planned (unfit).
            out = self.outdir.joinpath(*folder, component(rel.name))
            self.unfit[os.fspath(out)] = name.why
        else:
            self.taken[key((*folder, name))] = source
            out = self.outdir.joinpath(*folder, name)
        self.done[(source, wanted)] = out
        return out

    def name(self, source: Path, folder: tuple[str, ...], wanted: str, room: int) -> str | Unfit:
        """The file name: the one recorded for this source if it still
        spells ``wanted``; else the first free of ``wanted``, ``wanted (2)``...;
        Unfit when the first does not fit ``room``, or when a number that
        would tell it from another does not."""
        for parts in self.recorded.get(source, ()):
            if key(parts[:-1]) != key(folder):
                continue
            stem = split(parts[-1])[0]
            m = NUMBERED.match(stem)
            n = int(m.group(2)) if m else 1
            if parts[-1] == self.numbered(wanted, n, room) and self.free(source, (*folder, parts[-1])):
                return parts[-1]
        n = 1
        while (name := self.numbered(wanted, n, room)) is not None and not self.free(source, (*folder, name)):
            n += 1
        if name is not None:
            return name
        limit = f"--max-path {self.max_path}"
        if n == 1:
            used = f" after its folder's {self.max_path - room} units" if folder else ""
            return Unfit(f"no name for it fits {limit}{used}")
        other = self.taken.get(key((*folder, self.numbered(wanted, 1, room) or "")))
        return Unfit(f"no name with a number to tell it from {other or 'another output'} fits {limit}")

    def numbered(self, wanted: str, n: int, room: int) -> str | None:
        return spelling(wanted, room, f" ({n})" if n > 1 else "")

    def free(self, source: Path, parts: tuple[str, ...]) -> bool:
        k = key(parts)
        return self.taken.get(k, source) == source and self.reserved.get(k, source) == source

    def folder(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """A folder's spelling: each component spelled, the longest ones cut
        while the folder leaves less than NAME_RESERVE units of --max-path
        for a file name (so all the files of a folder stay together), and
        a folder that differs from one seen before only in case spelled as
        that one. A mode's folder is kept whole."""
        spelled = [component(p, is_file=False) for p in parts]
        cuttable = range(1 if parts and parts[0] in self.kept else 0, len(spelled))
        while cuttable and units("/".join(spelled)) > self.max_path - NAME_RESERVE:
            longest = max(cuttable, key=lambda i: units(spelled[i]))
            if units(spelled[longest]) <= 1:
                break
            spelled[longest] = component(spelled[longest][:-1], is_file=False)
        out: list[str] = []
        for part in spelled:
            out.append(self.spellings.setdefault(key((*out, part)), part))
        return tuple(out)
