"""Walk the input tree: FLAC sources and the other files, sorted.

No side effects; nothing here opens a file's content.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from flac2all.planning.cue import SHEET
from flac2all.planning.selection import Selection
from flac2all.running.rooms import TEMP_NAME

EVERYTHING = Selection()


@dataclass(frozen=True, slots=True)
class Source:
    """One file of the input tree."""

    path: Path  # absolute
    rel: Path  # relative to the input folder
    size: int
    mtime_ns: int


@dataclass
class Tree:
    flacs: list[Source] = field(default_factory=list)
    others: list[Source] = field(default_factory=list)  # lossy files and playlists among them
    # (path, cause) for folders that could not be listed
    errors: list[tuple[Path, str]] = field(default_factory=list)
    # Every CUE sheet's path (as text, whatever the globs take) -> its mtime
    # in ns (not the ctime, which a chmod of the library would make new).
    sheets: dict[str, int] = field(default_factory=dict)


def is_flac_name(name: str) -> bool:
    return name.lower().endswith(".flac")


# The lossy formats --lossy knows, by extension: the same format name for
# an output's extension means "no conversion needed" (an mp3 is never
# re-encoded into mp3).
LOSSY_FORMATS = {
    ".mp3": "mp3",
    ".m4a": "aac",
    ".aac": "aac",
    ".ogg": "vorbis",
    ".oga": "vorbis",
    ".opus": "opus",
    ".wma": "wma",
}
PLAYLIST_EXTENSIONS = (".m3u", ".m3u8")


def lossy_format(path: Path) -> str | None:
    """The lossy format a file holds by its name (None: not one --lossy takes)."""
    return LOSSY_FORMATS.get(path.suffix.lower())


def extension_format(extension: str) -> str | None:
    """The lossy format of an output extension (``.mp3``: mp3)."""
    return LOSSY_FORMATS.get(extension.lower())


def is_playlist(path: Path) -> bool:
    return path.suffix.lower() in PLAYLIST_EXTENSIONS


def discover(input_dir: Path, prune: frozenset[Path] = frozenset(), select: Selection = EVERYTHING) -> Tree:
    """Every file under ``input_dir`` (absolute), sorted by relative path:
    the whole of ``walk``, in the order of the sources' relative paths
    (``gather``).

    Folders in ``prune`` (the output folders when they sit inside the input)
    are not entered. Symbolic links to folders are not followed, so a link
    loop cannot make the walk endless; links to files are sources like any
    other, and a dangling one fails as its task with a clear message.
    Only what ``select``'s globs take is walked and listed.
    """
    return gather(walk(input_dir, prune, select))


def gather(listings: Iterator[Listing]) -> Tree:
    """The listings of a walk as one tree, each list in the order of the
    sources' relative paths: a folder's files and its subfolders' in name
    order, files and folders together (a walk gives a folder's files
    before its subfolders). Linear: no sort."""
    tree = Tree()

    def place(listing: Listing) -> None:
        tree.errors += listing.errors
        tree.sheets.update(listing.sheets)
        flacs = others = 0
        for nflacs, nothers in listing.subfolders:
            tree.flacs += listing.flacs[flacs:nflacs]
            tree.others += listing.others[others:nothers]
            flacs, others = nflacs, nothers
            place(next(listings))
        tree.flacs += listing.flacs[flacs:]
        tree.others += listing.others[others:]

    listings = iter(listings)
    for top in listings:
        place(top)
    return tree


def listed(
    folder: Path,
    rel_folder: Path,
    entries: list[os.DirEntry],
    prune: frozenset[Path],
    tree: Tree,
    select: Selection = EVERYTHING,
) -> Iterator[tuple[Path, Path]]:
    """The files of one folder into ``tree``, in name order; its subfolders
    to walk yielded in their place (the files before them are in ``tree``).
    What ``select``'s globs leave out is neither listed nor walked."""
    for entry in entries:
        path = folder / entry.name
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if (
                path not in prune
                and not entry.is_symlink()
                and (not select.by_path or select.walks(rel_folder / entry.name))
            ):
                yield path, rel_folder / entry.name
            continue
        if entry.name.endswith(SHEET):  # (before the globs: a sheet splits its FLAC whatever they take)
            with suppress(OSError):
                st = entry.stat()
                tree.sheets[os.fspath(path)] = st.st_mtime_ns
        if TEMP_NAME.fullmatch(entry.name) or (select.by_path and not select.takes(rel_folder / entry.name)):
            continue
        try:
            st = entry.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime_ns = 0  # dangling link: its task says why
        source = Source(path, rel_folder / entry.name, size, mtime_ns)
        (tree.flacs if is_flac_name(entry.name) else tree.others).append(source)


@dataclass(slots=True)
class Listing:
    """One folder of the input tree: its files, sorted by name (or why it
    could not be listed)."""

    folder: Path
    flacs: list[Source] = field(default_factory=list)
    others: list[Source] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    sheets: dict[str, int] = field(default_factory=dict)  # as Tree's
    # Where each subfolder walked stands among the files, in name order:
    # (FLACs before it, other files before it). ``gather`` merges by it.
    subfolders: list[tuple[int, int]] = field(default_factory=list)


def walk(input_dir: Path, prune: frozenset[Path] = frozenset(), select: Selection = EVERYTHING) -> Iterator[Listing]:
    """The folders of ``input_dir``, one ``Listing`` each, as they are
    listed: depth first in name order (each folder before its subfolders),
    so that a run can plan a folder while the rest is still unwalked; a
    folder holds all of its files in one listing (outputs can only clash
    within one folder)."""
    stack = [iter([(input_dir, Path())])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        folder, rel_folder = item
        listing = Listing(folder)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            listing.errors.append((folder, exc.strerror or str(exc)))
            yield listing
            continue
        tree = Tree(listing.flacs, listing.others, sheets=listing.sheets)
        subfolders = []
        for sub in listed(folder, rel_folder, entries, prune, tree, select):
            subfolders.append(sub)
            listing.subfolders.append((len(listing.flacs), len(listing.others)))
        yield listing
        stack.append(iter(subfolders))
