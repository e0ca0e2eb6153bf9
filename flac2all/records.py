"""The state's rows as the planner reads them: ``Record`` (one output and
what it was made from), ``Row`` (a row as loaded, text only), ``Records``
(every row, by output) and ``FolderRecords`` (one output folder's at a
time, for a mirror planned as the walk goes)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from flac2all.model import SourceFacts

if TYPE_CHECKING:
    from flac2all.state import State


@dataclass(frozen=True)
class Record:
    """One output and what it was made from (absolute paths)."""

    output: Path
    source: Path
    mode: str
    facts: SourceFacts
    settings_hash: str
    out_size: int
    out_mtime_ns: int
    art: str = ""  # the folder cover it embeds (extras.folder_covers)

    @classmethod
    def made(
        cls,
        output: Path,
        source: Path,
        mode: str,
        facts: SourceFacts,
        settings_hash: str,
        st: os.stat_result,
        art: str = "",
    ) -> Record:
        """The record of an output as it stands (``st``: its stat)."""
        return cls(output, source, mode, facts, settings_hash, st.st_size, st.st_mtime_ns, art)

    def output_is(self, st: os.stat_result | None) -> bool:
        """The output on disk is the one recorded (same size and mtime)."""
        return st is not None and (st.st_size, st.st_mtime_ns) == (self.out_size, self.out_mtime_ns)

    def source_is(self, size: int, mtime_ns: int) -> bool:
        """The source's stat is the one recorded."""
        return (self.facts.size, self.facts.mtime_ns) == (size, mtime_ns)


class Row(NamedTuple):
    """A state row as loaded: what a no-op run compares, without a Path or
    a Record made (``source``: the absolute path as text)."""

    source: str
    mode: str
    src_size: int
    src_mtime_ns: int
    audio_md5: str
    tags_hash: str
    pictures_hash: str
    settings_hash: str
    out_size: int
    out_mtime_ns: int
    art: str


class Records(Mapping[Path, Record]):
    """The state's rows by absolute output path: a read-only mapping of
    Path -> Record whose Records (and their Paths) are made only when asked.
    Rows are kept by the output's path as text (``os.fspath``: equal Paths
    have equal text on POSIX), so that a run over a million outputs makes no
    Path to look one up (``row``), to list the sources (``sources``) or to
    find the rows no task claimed (``unclaimed``)."""

    def __init__(self, rows: dict[str, Row] | None = None) -> None:
        self._rows: dict[str, Row] = rows if rows is not None else {}

    @classmethod
    def of(cls, records: Mapping[Path, Record]) -> Records:
        """The same rows, from Records (a plain dict's, as tests make them)."""
        if isinstance(records, Records):
            return records
        rows = {}
        for output, rec in records.items():
            f = rec.facts
            rows[os.fspath(output)] = Row(
                os.fspath(rec.source),
                rec.mode,
                f.size,
                f.mtime_ns,
                f.audio_md5,
                f.tags_hash,
                f.pictures_hash,
                rec.settings_hash,
                rec.out_size,
                rec.out_mtime_ns,
                rec.art,
            )
        return cls(rows)

    @staticmethod
    def record(output: str, row: Row) -> Record:
        return Record(
            Path(output),
            Path(row.source),
            row.mode,
            SourceFacts(row.src_size, row.src_mtime_ns, row.audio_md5, row.tags_hash, row.pictures_hash),
            row.settings_hash,
            row.out_size,
            row.out_mtime_ns,
            row.art,
        )

    def row(self, output: os.PathLike | str) -> Row | None:
        """The row of ``output``, None if there is none."""
        return self._rows.get(os.fspath(output))

    def sources(self) -> set[str]:
        """Every row's source, as text."""
        return {row.source for row in self._rows.values()}

    def unclaimed(self, claimed: set[str]) -> Iterator[Record]:
        """The Records of the outputs whose text is not in ``claimed``."""
        for output, row in self._rows.items():
            if output not in claimed:
                yield self.record(output, row)

    def __getitem__(self, output: Path) -> Record:
        key = os.fspath(output)
        return self.record(key, self._rows[key])

    def get(self, output: Path, default: Record | None = None) -> Record | None:  # type: ignore[override]
        key = os.fspath(output)
        row = self._rows.get(key)
        return default if row is None else self.record(key, row)

    def __contains__(self, output: object) -> bool:
        return isinstance(output, os.PathLike | str) and os.fspath(output) in self._rows

    def __iter__(self) -> Iterator[Path]:
        return map(Path, self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"Records({len(self)} rows)"


# State rows read at once rather than a folder at a time (about 200 MB).
RESIDENT = 500_000


class FolderRecords(Records):
    """The state's rows read an output folder at a time, at the first look
    into it (``State.rows_in``): what a mirror planned as the walk goes
    asks, holding one source folder's rows at a time. ``done`` ends a
    source folder (the rows it read that no task claimed); ``rest`` is
    every row of the folders never read."""

    def __init__(self, state: State) -> None:
        super().__init__()
        self.state = state
        self.read: set[str] = set()  # output folders read (text ending in "/")
        self.count = 0  # rows read
        self.total = state.count()
        # A state that fits is read at once (one query instead of one a
        # folder), grouped by output folder: the same looks, as cheap as
        # a plan of the whole tree.
        self.resident: dict[str, dict[str, Row]] | None = None
        if self.total <= RESIDENT:
            self.resident = {}
            for output, row in state.rows_in().items():
                self.resident.setdefault(output[: output.rfind("/") + 1], {})[output] = row

    def _look(self, output: os.PathLike | str) -> str:
        key = os.fspath(output)
        self.read_folders(key[: key.rfind("/") + 1])
        return key

    def read_folders(self, *folders: str) -> None:
        """Read the rows of ``folders`` not read yet (in one query)."""
        new = [folder for folder in folders if folder not in self.read]
        if not new:
            return
        self.read.update(new)
        if self.resident is None:
            rows = self.state.rows_in(*new)
        else:
            rows = {}
            for folder in new:
                rows.update(self.resident.pop(folder, {}))
        self.count += len(rows)
        self._rows.update(rows)

    def row(self, output: os.PathLike | str) -> Row | None:
        # Most looks find their folder read already: one dict look.
        found = self._rows.get(output)  # type: ignore[call-overload]
        return found if found is not None else self._rows.get(self._look(output))

    def __getitem__(self, output: Path) -> Record:
        return super().__getitem__(Path(self._look(output)))

    def get(self, output: Path, default: Record | None = None) -> Record | None:  # type: ignore[override]
        self._look(output)
        return super().get(output, default)

    def __contains__(self, output: object) -> bool:
        return isinstance(output, os.PathLike | str) and self._look(output) in self._rows

    def __len__(self) -> int:
        return self.total

    def done(self, claimed: set[str]) -> tuple[list[Record], set[str]]:
        """The rows read since the last call that are not in ``claimed``
        (text), as Records, and the sources of all of them (text); forgets
        them all."""
        left = list(self.unclaimed(claimed))
        sources = {row.source for row in self._rows.values()}
        self._rows = {}
        return left, sources

    def rest(self) -> Iterator[Record]:
        """The rows of the output folders never read."""
        if self.resident is not None:
            for rows in self.resident.values():
                for output, row in rows.items():
                    yield self.record(output, row)
        elif self.count < self.total:
            for output, row in self.state.rows_outside(self.read):
                yield self.record(output, row)


def texts(paths: Iterable[os.PathLike]) -> set[str]:
    """Paths as the text ``Records`` keys them by."""
    return set(map(os.fspath, paths))
