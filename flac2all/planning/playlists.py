"""Playlists (--playlists): each .m3u/.m3u8 of the input written into each
mode's tree, every entry pointing at its converted file.

An entry (a path relative to the playlist's folder, an absolute path, or a
file:// URL) names a source; it becomes the path of that source's output in
the playlist's tree, relative to the playlist (with '/'), as the run's name
rules spelled it. An entry whose source has no output there (not in the
input, not converted, failed) is dropped with a warning, and so are the
#EXTINF-like lines that describe it; other lines (#EXTM3U, comments, web
URLs) are kept as they are. The engine writes the playlists after the other
tasks, when their outputs exist; one whose text would not change is left
alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flac2all.errors import TaskError, describe_oserror
from flac2all.lines import printable, shown
from flac2all.model import Action, SourceFacts, Status, Task, TaskResult
from flac2all.running.outputs import commit, staged
from flac2all.tags.source import read_regular

log = logging.getLogger("flac2all")

# Lines that describe the entry after them, and go with it.
ENTRY_LINES = ("#EXTINF", "#EXTGRP", "#EXTALB", "#EXTART", "#EXTGENRE", "#EXTBYT", "#EXTIMG", "#EXTVLCOPT")
MAX_PLAYLIST = 16 * 1024 * 1024


def decode(data: bytes, path: Path) -> tuple[str, str]:
    """(text, encoding): .m3u8 is UTF-8; an .m3u is UTF-8 when it decodes
    as such, else Windows-1252 (what players write), else Latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "surrogateescape"), "utf-8-sig"
    if path.suffix.lower() == ".m3u8":
        return data.decode("utf-8", "surrogateescape"), "utf-8"
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


def encode(text: str, encoding: str) -> bytes:
    try:
        return text.encode(encoding, "surrogateescape" if encoding.startswith("utf-8") else "strict")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")  # an output name the old encoding cannot hold


def entry_source(entry: str, folder: Path) -> Path | None:
    """The file an entry names, as an absolute path (None: a web URL)."""
    if "://" in entry:
        url = urlsplit(entry)
        if url.scheme.lower() != "file":
            return None
        entry = unquote(url.path)
    path = Path(entry)
    if not path.is_absolute() and "\\" in entry and not (folder / path).exists():
        path = Path(entry.replace("\\", "/"))  # written on Windows
    return Path(os.path.normpath(folder / path))


def rewrite(
    text: str, task: Task, input_dir: Path, outputs: Mapping[tuple[Path, str], Path]
) -> tuple[list[str], list[str]]:
    """The playlist's lines pointing at the outputs, and the entries dropped."""
    lines: list[str] = []
    pending: list[str] = []  # the lines describing the next entry
    dropped: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            (pending if stripped.upper().startswith(ENTRY_LINES) else lines).append(line)
            continue
        source = entry_source(stripped, task.source.parent)
        if source is None:  # http://... : not a file of ours
            lines += [*pending, line]
        else:
            output = outputs.get((source, task.mode))
            if not source.is_relative_to(input_dir) or output is None or not output.exists():
                dropped.append(stripped)
            else:
                lines += [*pending, Path(os.path.relpath(output, task.output.parent)).as_posix()]
        pending = []
    return lines + pending, dropped


def write(task: Task, input_dir: Path, outputs: Mapping[tuple[Path, str], Path]) -> TaskResult:
    """Write one playlist's output; a failed result, never an exception."""
    started = time.monotonic()
    try:
        # A link out of the library (library/x.m3u -> /etc/passwd) is not
        # read: its lines would be echoed as dropped entries.
        real = os.path.realpath(task.source)
        if not Path(real).is_relative_to(os.path.realpath(input_dir)):
            raise TaskError(f"not read: a link to {printable(real)}, outside the input folder")
        st = os.stat(task.source)
        data = read_regular(task.source, MAX_PLAYLIST)
        if data is None:
            raise TaskError("cannot read the playlist (not a regular file, or larger than 16 MiB)")
        if b"\0" in data:
            raise TaskError("not a playlist: binary data, not text")
        text, encoding = decode(data, task.source)
        lines, dropped = rewrite(text, task, input_dir, outputs)
        newline = "\r\n" if "\r\n" in text else "\n"
        content = encode(newline.join(lines) + newline, encoding)
        facts = SourceFacts(st.st_size, st.st_mtime_ns, "", "", "")
        note = f"{len(dropped)} of its entries dropped (not converted)" if dropped else ""
        try:
            if task.output.read_bytes() == content:
                done = Task(task.source, task.mode, task.output, Action.SKIP, task.size, settings_hash="playlist")
                return TaskResult(done, Status.SKIPPED, "skipped: up to date", 0, time.monotonic() - started, facts)
        except OSError:
            pass
        # Said when the playlist is written, not again while it stays so (cron).
        where = f"{printable(task.source)} [{task.mode}]"
        for entry in dropped:
            log.warning("%s: entry %s dropped: no output of it in this tree", where, shown(entry))
        with staged(task.output, fd_only=True) as tmp:
            try:
                with open(tmp.stage.fd, "wb", closefd=False) as f:
                    f.write(content)
            except OSError as exc:
                raise TaskError(f"cannot write the playlist: {describe_oserror(exc)}") from None
            commit(tmp, task.output)
    except TaskError as exc:
        return TaskResult(task, Status.FAILED, exc.message, exc.returncode, time.monotonic() - started)
    except OSError as exc:
        return TaskResult(task, Status.FAILED, f"cannot read: {describe_oserror(exc)}", 1, time.monotonic() - started)
    return TaskResult(task, Status.SUCCESS, note or "playlist written", 0, time.monotonic() - started, facts)
