"""Output staging: temp names, stage, commit, sweep.

An output is written under a hidden temporary name beside its final name
(keeping the extension: encoders and mutagen choose the format by it) and
renamed into place only when complete, so a file under a final name is
always complete. Imports nothing of flac2all's but its errors.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flac2all.errors import TaskError, describe_oserror

log = logging.getLogger("flac2all")

TEMP_PREFIX = ".flac2all-tmp-"
TEMP_NAME = re.compile(r"\.flac2all-tmp-[0-9a-f]{12}(\.[^/]*)?")


def temp_path(final: Path) -> Path:
    """A hidden name beside ``final`` that keeps its extension (encoders and
    mutagen choose the format by it)."""
    return final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}{final.suffix}")


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """Yield a temp path; whatever is left there afterwards is removed."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TaskError(f"cannot create folder {final.parent}: {describe_oserror(exc)}") from None
    tmp = temp_path(final)
    try:
        yield tmp
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def remove_stale_temps(folders: set[Path]) -> int:
    """Delete the temp files a killed run (or a killed worker) left in
    ``folders``; call it only when nothing else writes there. The engine
    passes the folders its tasks write into: a killed task's output is not
    committed (or its row not updated), so the next run with the same
    settings has a task that writes in its folder; a no-op run lists none."""
    removed = 0
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                stale = [e.path for e in it if TEMP_NAME.fullmatch(e.name)]
        except (FileNotFoundError, NotADirectoryError):  # not made yet: nothing left in it
            continue
        except OSError as exc:
            log.warning("cannot look for temp files left in %s: %s", folder, describe_oserror(exc))
            continue
        for path in stale:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the temp file %s left by an earlier run: %s", path, describe_oserror(exc))
    return removed


def commit(tmp: Path, final: Path) -> None:
    """Atomically put a finished temp file under its final name."""
    try:
        os.replace(tmp, final)
    except OSError as exc:
        raise TaskError(f"cannot write {final}: {describe_oserror(exc)}") from None


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``top`` itself."""
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
