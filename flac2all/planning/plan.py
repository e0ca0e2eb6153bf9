"""Decide the jobs of a run: one action per (source, mode), grouped by source.

(sources, codecs, settings, tool versions, the state of the mirror) -> a Plan
of Tasks and the Jobs that run them. Pure: it starts no process (the engine
probes the tools and passes their versions in) and reaches the file system
only through its ``stat``, ``facts`` and ``provenance`` seams. An unchanged
source is skipped from stat and the state alone (no file opened, no process
started); a changed one is read (metadata only) to tell a tag edit (retag)
from new audio (re-encode); a new source whose audio matches an output whose
source is gone is a move; what is left of the state is orphans. Largest
(costliest) jobs first, so a run does not end with one long file on one core.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path

from flac2all import tags
from flac2all.codecs.base import Codec
from flac2all.errors import TaskError
from flac2all.model import (
    Action,
    Job,
    Layout,
    Names,
    Settings,
    SourceFacts,
    Status,
    Task,
    TaskResult,
    Track,
)
from flac2all.planning import cue, decisions, extras, moves, splits, template
from flac2all.planning.discovery import Source, Tree, is_flac_name
from flac2all.planning.fields import Comments
from flac2all.planning.hashes import settings_hash
from flac2all.planning.names import Namer, output_folder, output_name
from flac2all.planning.planned import Plan
from flac2all.planning.selection import Selection
from flac2all.records import Record, Records
from flac2all.skips import Skip
from flac2all.tags import TagFamily
from flac2all.tags.lossy import read_bitrate


def stat_or_none(path: os.PathLike | str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def read_facts(source: Path) -> SourceFacts | None:
    """Facts of a FLAC source (metadata only), None if it cannot be read."""
    try:
        return tags.read_source_facts(source)[1]
    except TaskError:
        return None


def read_meta(source: Path) -> tuple[Comments, SourceFacts] | None:
    """The comments and facts of a FLAC source (metadata only), None if it
    cannot be read."""
    try:
        meta, facts = tags.read_source_facts(source)
    except TaskError:
        return None
    return meta.comments, facts


def selection_of(settings: Settings) -> Selection:
    """The run's ``--include``, ``--exclude`` and ``--query``, compiled."""
    return Selection.of(settings.include, settings.exclude, settings.query)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside. Making a million objects that
    all stay (rows, tasks) otherwise sets off full collections that walk
    every object again and again (a fifth of a no-op run's CPU at 200,000
    sources); what is made inside is not cyclic garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Planner:
    """Builds a Plan; the state and the file system are asked through
    ``records``, ``stat``, ``facts``, ``provenance`` and ``bitrate`` (of a
    lossy file, in bit/s). ``refuse`` False (a dry run) turns a refusal
    into a warning in the plan."""

    def __init__(
        self,
        settings: Settings,
        codecs: tuple[Codec, ...],
        records: Mapping[Path, Record],
        versions: Mapping[str, str],
        stat: Callable[[Path], os.stat_result | None] = stat_or_none,
        facts: Callable[[Path], SourceFacts | None] = read_facts,
        provenance: Callable[[TagFamily, Path], dict[str, str] | None] = TagFamily.read_provenance,
        refuse: bool = True,
        bitrate: Callable[[Path], int | None] = read_bitrate,
        meta: Callable[[Path], tuple[Comments, SourceFacts] | None] = read_meta,
        layout_known: bool = False,
        tracks: Callable[[Path, Path | None, str | None], tuple[Track, ...] | None] | None = None,
    ) -> None:
        """``layout_known``: the state's rows follow this run's --path-format
        (``layouts.layout_known``), so an unchanged source's outputs
        are its rows', its tags unread."""
        self.settings = settings
        self.refuse = refuse
        self.codecs = codecs
        self.records = Records.of(records)
        self.stat = stat
        self.provenance = provenance
        self.bitrate = bitrate
        self._facts = facts
        self._facts_cache: dict[Path, SourceFacts | None] = {}
        self._meta = meta
        self._comments_cache: dict[Path, Comments | None] = {}
        self.hashes = {c.name: settings_hash(c, settings, versions) for c in codecs}
        self.plan = Plan()
        self.selection = selection_of(settings)
        self.layout = template.parse(settings.path_format) if settings.path_format else None
        # The source folders with a FLAC the --query tests took, and with one they left out.
        self.taken_folders: set[Path] = set()
        self.left_folders: set[Path] = set()
        # (source folder, mode) -> the output folders its FLACs went to, with --path-format.
        self.albums: dict[tuple[Path, str], dict[Path, None]] = {}
        self.layout_known = layout_known
        self.tracks = tracks or cue.read_tracks
        # The .cue files a split FLAC was split by: not copied as other files are.
        self.used_cues: set[Path] = set()
        # The CUE sheets of the FLACs being decided, and their mtimes (decide_all).
        self.sheets: Mapping[str, int] = {}
        self._by_source: dict[tuple[str, str], list[Path]] | None = None
        if settings.include or settings.exclude or settings.query or settings.path_format:
            self.plan.selection = {
                "include": list(settings.include),
                "exclude": list(settings.exclude),
                "query": list(settings.query),
                "path_format": settings.path_format,
            }
        # By the output's text (os.fspath): no Path hashed per output.
        self.claimed: dict[str, Path] = {}
        self.fresh: dict[str, tuple[Path, str]] = {}
        # The output folder last made, per mode (its Path, and its text with a
        # trailing "/"): the sources come folder by folder, and each of a
        # folder's outputs shares its folder's Path.
        self._folders: dict[str | None, tuple[tuple[str, ...], Path, str]] = {}
        self.namer = Namer(settings.outdir, settings.names, settings.max_path, {}, self.mode_folders())

    def mode_folders(self) -> tuple[str, ...]:
        """The modes' own folders below OUTDIR (none unless each mode has one)."""
        return tuple(c.folder for c in self.codecs) if self.settings.layout is Layout.TREE else ()

    def facts(self, source: Path) -> SourceFacts | None:
        if source not in self._facts_cache:
            self._facts_cache[source] = self._facts(source)
        return self._facts_cache[source]

    def comments(self, source: Path) -> Comments | None:
        """A FLAC source's comments (its facts kept too), None if it cannot be read."""
        if source not in self._comments_cache:
            read = self._meta(source)
            self._comments_cache[source] = None if read is None else read[0]
            if read is not None:
                self._facts_cache.setdefault(source, read[1])
        return self._comments_cache[source]

    def forget_facts(self) -> None:
        """Drop the facts read so far (a folder's, once it is planned)."""
        self._facts_cache.clear()
        self._comments_cache.clear()
        self.taken_folders.clear()
        self.left_folders.clear()

    def chosen(self, source: Source) -> bool:
        """Whether a FLAC source passes the --query tests (one whose tags
        cannot be read does: its task says why); one that does not is
        noted in the plan."""
        if not self.selection.query:
            return True
        comments = self.comments(source.path)
        if comments is None or self.selection.accepts(comments):
            self.taken_folders.add(source.path.parent)
            return True
        self.plan.unselected.append(source.path)
        self.left_folders.add(source.path.parent)
        return False

    def leaves_out(self, source: Source) -> bool:
        """Whether a file that is not a FLAC goes with its folder's FLACs
        out of the selection: --query left out every one of them."""
        folder = source.path.parent
        return folder in self.left_folders and folder not in self.taken_folders

    def output(self, source: Source, codec: Codec, suffix: str | None) -> Path:
        """The output of ``source`` in ``codec``'s tree, spelled by the
        run's name rules (``suffix`` None: a copy keeps its extension);
        a FLAC's where --path-format puts it."""
        if self.layout is not None and suffix is not None and is_flac_name(source.rel.name):
            wanted = self.known_output(source, codec)
            if wanted is None and (comments := self.comments(source.path)) is not None:
                wanted = output_folder(Path(), codec, self.settings) / self.layout.render(comments, source.rel, suffix)
            if wanted is not None:  # (else where the source tree puts it: its task says why)
                output = self.namer.output(source.path, wanted)
                self.albums.setdefault((source.path.parent, codec.name), {})[output.parent] = None
                return output
        return self.namer.output(source.path, self.folder(source, codec)[1] / output_name(source.rel, suffix))

    def known_output(self, source: Source, codec: Codec) -> Path | None:
        """With ``layout_known``, the output of an unchanged source: its one
        row in this mode, made from the source as it is, with these
        settings (None: its tags say where it goes)."""
        if not self.layout_known:
            return None
        if self._by_source is None:
            self._by_source = {}
            for output in self.records:
                row = self.records.row(output)
                if row is not None:
                    self._by_source.setdefault((row.source, row.mode), []).append(output)
        outputs = self._by_source.get((os.fspath(source.path), codec.name), [])
        row = self.records.row(outputs[0]) if len(outputs) == 1 else None
        if row is None or (row.src_size, row.src_mtime_ns) != (source.size, source.mtime_ns):
            return None
        return outputs[0] if row.settings_hash == self.hashes[codec.name] else None

    def copies(self, source: Source, codec: Codec) -> list[Path]:
        """Where the copies of a file that is not a FLAC go: with
        --path-format, into each folder the FLACs of its folder went to
        (where the source tree puts it when it has none); else ``output``."""
        folders = self.albums.get((source.path.parent, codec.name)) if self.layout is not None else None
        if not folders:
            return [self.output(source, codec, None)]
        return [self.namer.output(source.path, folder / source.rel.name) for folder in folders]

    def folder(self, source: Source, codec: Codec | None) -> tuple[tuple[str, ...], Path, str]:
        """The output folder of ``source`` in ``codec``'s tree (None:
        mode-less), before any name rule: (its source folder's parts, its
        Path, its text ending in "/")."""
        rel = source.rel
        parts = rel.parts[:-1]
        mode = None if codec is None else codec.name
        last = self._folders.get(mode)
        if last is None or last[0] != parts:
            folder = output_folder(rel.parent, codec, self.settings)
            last = self._folders[mode] = (parts, folder, os.path.join(os.fspath(folder), ""))
        return last

    def claim(self, task: Task) -> bool:
        """Whether ``task``'s output is its own; else it is refused."""
        output, key = task.output, os.fspath(task.output)
        other = self.claimed.get(key)
        first = self.fresh.setdefault(key, (task.source, task.mode))
        if first != (task.source, task.mode):
            other = first[0]  # a new output of a FLAC, planned once moves are known
        itself = key == os.fspath(task.source)
        unfit = self.namer.unfit.get(key)
        if not unfit and self.settings.layout is not Layout.TREE and not moves.where_outputs_go(output, self.settings):
            unfit = "it would be one of flac2all's own files (its state folder or log)"  # (-n m: OUTDIR's top)
        if itself or other is not None or unfit:
            why = unfit or ("it is the source itself" if itself else f"{other} has the same output")
            self.plan.refused.append(TaskResult(task, Status.FAILED, f"output {output} not written: {why}", 1))
            return False
        self.claimed[key] = task.source
        return True

    def add(self, source: Source, codec: Codec, output: Path, action: Action, **kw) -> None:
        kw.setdefault("settings_hash", self.hashes[codec.name])
        task = Task(source.path, codec.name, output, action, source.size, **kw)
        if self.claim(task):
            self.plan.tasks.append(task)
            self.keep_output(source, codec, output)

    def keep_output(self, source: Source, codec: Codec, output: Path) -> None:
        """(source, mode) -> output, which only the playlists read: not
        kept without them (a million sources would hold two million)."""
        if self.settings.playlists:
            self.plan.outputs[(source.path, codec.name)] = output

    def record(self, source: Source, codec: Codec, output: Path, facts: SourceFacts, st: os.stat_result) -> None:
        art = self.plan.cover(source.path)
        self.plan.refresh.append(Record.made(output, source.path, codec.name, facts, self.hashes[codec.name], st, art))

    def build(self, tree: Tree) -> Plan:
        settings = self.settings
        # The names the state records stay the names of their sources (only
        # --names fat32 spells names; the others need no Record made).
        recorded: dict[Path, Path] = {}
        if settings.names is Names.FAT32:
            present = {s.path for s in tree.flacs} | {s.path for s in tree.others}
            recorded = {out: rec.source for out, rec in self.records.items() if rec.source in present}
        self.namer = Namer(settings.outdir, settings.names, settings.max_path, recorded, self.mode_folders())
        if settings.embed_folder_art:
            self.plan.covers = extras.folder_covers(tree)
        fresh = self.decide_all(tree.flacs, tree.sheets)
        extras.plan_others(self, tree)
        moves.place_fresh(self, fresh, tree)
        # Longest first (by source size times the codec's cost), so the run
        # ends with short tasks on every core rather than one long one.
        cost = self.plan.costs = {c.name: c.cost for c in self.codecs}
        self.plan.tasks.sort(key=lambda t: t.size * cost.get(t.mode, 1.0), reverse=True)
        self.plan.skips.sort(key=itemgetter(3), reverse=True)  # (Skip.cost: the same order)
        if self.refuse:  # a dry run runs no job: the tasks are the plan
            self.plan.jobs = self.group(self.plan.tasks, cost)
        return self.plan

    def decide_all(self, flacs: list[Source], sheets: Mapping[str, int]) -> list[tuple[Source, Codec, Path]]:
        """Add the task of every source and mode decided now; return the new
        outputs (encodes, or moves once the orphans are known), registered
        so that a copy or a note never takes a FLAC's output name.
        ``sheets``: the CUE sheets listed with them (``Tree.sheets``)."""
        fresh: list[tuple[Source, Codec, Path]] = []
        # Up-to-date outputs are found from text (their Path never made);
        # fat32 names are spelled from Paths, and need the slow way.
        quick = bool(self.records) and not self.settings.force and not self.namer.fat and self.layout is None
        self.sheets = sheets if self.settings.cue == "split" else {}
        for source in flacs:
            if not self.chosen(source):
                continue
            text = os.fspath(source.path) if quick else ""
            # A sheet beside it: when it last changed (splits.sheet_since).
            sheet = splits.sheet_beside(self, text)[1] if quick else 0
            pending = []
            for codec in self.codecs:
                if quick:
                    key = self.folder(source, codec)[2] + output_name(source.rel, codec.extension)
                    if (
                        decisions.up_to_date(self, source, text, codec, key)
                        and not splits.sheet_since(self, key, sheet)
                        and self.skip(source, text, codec, key)
                    ):
                        continue
                pending.append(codec)
            if pending and splits.split(self, source, pending):
                continue
            for codec in pending:
                output = self.output(source, codec, codec.extension)
                decided = decisions.decide(self, source, codec, output)
                if decided is None:
                    fresh.append((source, codec, output))
                    self.fresh.setdefault(os.fspath(output), (source.path, codec.name))
                else:
                    self.add(source, codec, output, decided[0], note=decided[1])
        return fresh

    def skip(self, source: Source, text: str, codec: Codec, key: str) -> bool:
        """An up-to-date output claimed and kept as a ``Skip``; False when
        the claim is contested (``add`` then refuses the task, and says why)."""
        first = self.fresh.get(key)
        if key in self.claimed or key == text or (first is not None and first != (source.path, codec.name)):
            return False
        self.claimed[key] = source.path
        self.plan.skips.append(Skip(text, key, codec.name, source.size * codec.cost))
        if self.settings.playlists:
            self.keep_output(source, codec, Path(key))
        return True

    def group(self, tasks: list[Task], cost: dict[str, float]) -> list[Job]:
        """The encodes of one source whose modes read PCM share a job (one
        decoder for all: ``runner.execute_batch``); every other task (every
        task, without ``shared_decode``) is a job of its own. Costliest
        first, as the tasks."""
        shared = {c.name for c in self.codecs if c.reads_pcm} if self.settings.shared_decode else set()
        groups: dict[Path, list[Task]] = {}
        alone: list[Task] = []
        for task in tasks:
            if task.action is Action.ENCODE and task.mode in shared:
                groups.setdefault(task.source, []).append(task)
            else:
                alone.append(task)
        jobs = [Job(group, sum(t.size * cost.get(t.mode, 1.0) for t in group)) for group in map(tuple, groups.values())]
        # (A job of one task costs what its task does: no sum made for each.)
        jobs += [Job((t,), t.size * cost.get(t.mode, 1.0)) for t in alone]
        jobs.sort(key=lambda job: job.cost, reverse=True)
        return jobs


def build(
    tree: Tree,
    codecs: tuple[Codec, ...],
    settings: Settings,
    records: Mapping[Path, Record] | None = None,
    versions: Mapping[str, str] | None = None,
    **ask,
) -> Plan:
    """One task per (FLAC source, mode), plus copies with ``-c`` and orphans."""
    with collector_paused():  # every task made stays: no collection finds garbage among them
        return Planner(settings, codecs, records or {}, versions or {}, **ask).build(tree)
