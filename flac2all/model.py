"""The job model shared by every executor.

The plan decides one Task per (source file, mode) and groups them into Jobs:
the encodes of one source, which share its decoder, or one task alone. The
engine runs the jobs that are bookkeeping or file moves itself, and hands
the others to an executor (local threads, the cluster master); each job
becomes one TaskResult per task through ``runner.execute_batch``, which
``report`` turns into the summary, the CSV log and the exit status.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flac2all.audio.loudness import Loudness


def default_threads() -> int:
    """Files converted at once unless -t says: the CPU count and one or two
    more (as ninja runs its builds). Between two files a slot leaves its
    core idle (its programs starting, its outputs checked and tagged): on
    files of a second, 5-6% of the cores with one slot a core, under 3%
    with one more (BENCHMARKS.md, "Many short files"); on long files it
    makes no difference. The CPUs this process may use, where the system
    says (taskset, cpusets), not all the machine's."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return cpus + (1 if cpus <= 2 else 2)


class Action(Enum):
    """What a task does to its output."""

    ENCODE = "encode"  # new output, or audio/settings changed
    COPY = "copy"  # a non-FLAC file copied (-c)
    SKIP = "skip"  # up to date: nothing to do
    RETAG = "retag"  # same audio, tags or pictures changed: rewrite tags only
    MOVE = "move"  # source renamed/moved: rename its output, then retag
    DELETE = "delete"  # orphan output whose source is gone (--delete)
    ORPHAN = "orphan"  # orphan output kept (no --delete)
    CONVERT = "convert"  # a non-FLAC source made into an output: a lossy file re-encoded, a cover scaled
    PLAYLIST = "playlist"  # a playlist rewritten to point at the outputs (by the engine, after the others)

    @property
    def on_executor(self) -> bool:
        """Whether the executor's slots (threads, cluster workers) run it: the
        actions that read sources or write outputs. The others (notes,
        renames and deletions) the engine does itself, before the executor
        starts, on the machine that runs flac2all."""
        return self in (Action.ENCODE, Action.RETAG, Action.COPY, Action.CONVERT)


class Status(Enum):
    """How a task ended."""

    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"


class Names(Enum):
    """How output names are spelled (``--names``)."""

    POSIX = "posix"  # as the sources' names are
    FAT32 = "fat32"  # what FAT32/exFAT (and Windows) accept: flac2all.planning.names


class Lossy(Enum):
    """What to do with the lossy files (mp3, m4a, ogg...) of the input (``--lossy``)."""

    COPY = "copy"  # copied as they are into every mode's tree
    CONVERT = "convert"  # re-encoded into each mode whose format differs; copied into the others
    SKIP = "skip"  # left out, even with -c


class ReplayGain(Enum):
    """Where the outputs' gain tags come from (``--replaygain``)."""

    KEEP = "keep"  # the source's, copied (as R128 gains into Opus)
    FILL = "fill"  # measured from the decode where the source has no track gain
    COMPUTE = "compute"  # always measured
    OFF = "off"  # none written

    @property
    def measures(self) -> bool:
        """Whether this policy may need the decode measured."""
        return self in (ReplayGain.FILL, ReplayGain.COMPUTE)


class OpusGain(Enum):
    """How Opus outputs carry their gains (``--opus-gain``)."""

    R128 = "r128"  # R128_TRACK_GAIN / R128_ALBUM_GAIN tags (RFC 7845)
    HEADER = "header"  # the album's (else the track's) gain in the OpusHead output gain, the R128 tags relative to it
    BOTH = "both"  # R128 tags, and the REPLAYGAIN_* ones too, for players that read only those


class AlbumBy(Enum):
    """What an album is, for its album gain (``--album-by``)."""

    FOLDER = "folder"  # the FLACs of one source folder
    TAGS = "tags"  # the sources sharing an album artist (planning.albums.album_key), ALBUM and DISCNUMBER, wherever


class Layout(Enum):
    """Where outputs go (the original's ``-n/--nodirs``)."""

    TREE = "tree"  # OUTDIR/<mode>/<relative path>
    FLAT = "d"  # OUTDIR/<file name>
    NO_MODE_DIRS = "m"  # OUTDIR/<relative path>


@dataclass(frozen=True)
class AudioInfo:
    """The STREAMINFO facts a codec needs to build its command."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    length: float  # seconds


@dataclass(frozen=True)
class Wire:
    """A Settings field that cluster workers need, sent with the run's
    settings: ``kind`` says how it travels and is checked (cluster/jobs.py
    has one converter per kind), ``low``..``high`` bound a number."""

    kind: str  # "path", "modes", "options", "flag", "choice", "word", "seconds", "whole"
    low: float = 0
    high: float = 0
    # Added after masters of this protocol version were out: a master that
    # does not send it means its default.
    later: bool = False
    words: tuple[str, ...] = ()  # a "word": the values it may take


@dataclass(frozen=True)
class NotSent:
    """A Settings field workers would need but are not sent: a cluster run
    refuses ``flag`` when the field holds ``refused`` (or, when that is
    None, anything but its default)."""

    flag: str
    refused: object = None

    def refuses(self, value: object, default: object) -> bool:
        return value != default if self.refused is None else value == self.refused


def sent(
    kind: str,
    default: object = MISSING,
    low: float = 0,
    high: float = 0,
    factory: Any = MISSING,
    later: bool = False,
    words: tuple[str, ...] = (),
) -> Any:
    """A field that travels to cluster workers (see Wire)."""
    return field(default=default, default_factory=factory, metadata={"wire": Wire(kind, low, high, later, words)})


def not_sent(flag: str, default: object, refused: object = None) -> Any:
    """A field a cluster run refuses when it is set (see NotSent)."""
    return field(default=default, metadata={"not_sent": NotSent(flag, refused)})


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a run, decided once by the CLI (or a caller).

    The fields marked ``sent`` are what cluster workers are sent (and all
    they are sent; cluster/jobs.py converts them by their Wire kind); those
    marked ``not_sent`` are refused in a cluster run when set; the others
    are the master's alone (planning, the state, the engine).
    """

    input_dir: Path = sent("path")
    outdir: Path = sent("path")
    modes: tuple[str, ...] = sent("modes")
    force: bool = False
    threads: int = field(default_factory=default_threads)
    layout: Layout = sent("choice", Layout.TREE)
    copy: bool = False
    # Encoder options per option family (the names in
    # codecs.OPTION_FAMILIES: "lame", "vorbis", "opus", "flac", "ffmpeg",
    # "aac"), already split into argv words. A family that is missing gets
    # the codec's defaults.
    options: Mapping[str, tuple[str, ...]] = sent("options", factory=dict)
    # Seconds one task may run; None derives it from the audio's duration.
    timeout: float | None = sent("seconds", None, 1e-3, 1e7)
    # Tags: ID3v2.3 instead of v2.4 for mp3; embed cover.jpg & co. when the
    # source has no front cover of its own.
    id3v23: bool = sent("flag", False)
    embed_folder_art: bool = sent("flag", False)
    replaygain: ReplayGain = sent("choice", ReplayGain.KEEP, later=True)
    opus_gain: OpusGain = sent("choice", OpusGain.R128, later=True)
    album_by: AlbumBy = sent("choice", AlbumBy.FOLDER, later=True)
    # Mirror: remove orphan outputs (--delete), even many (--delete-anyway).
    delete: bool = False
    delete_anyway: bool = False
    # Run on an input without FLAC (--allow-empty), or one missing most of
    # the sources the state knows (--allow-missing-sources): refused
    # otherwise, as an unmounted disk looks like that.
    allow_empty: bool = False
    allow_missing_sources: bool = False
    # Decode a source once for all its modes (one Job); False runs one
    # decoder per output, as the original did.
    shared_decode: bool = True
    # Device profiles: how output names are spelled, and the longest path
    # (UTF-16 units below OUTDIR) fat32 names may make; the lossy files of
    # the input (None: like any other file, copied with -c) and the bitrate
    # (kbit/s) above which they are re-encoded; the longest side of
    # embedded and copied covers (pixels); playlists rewritten.
    names: Names = not_sent("--names fat32", Names.POSIX, Names.FAT32)
    max_path: int = 255
    lossy: Lossy | None = not_sent("--lossy convert", None, Lossy.CONVERT)
    max_bitrate: int | None = not_sent("--max-bitrate", None)
    art_max_size: int | None = not_sent("--art-max-size", None)
    playlists: bool = False
    # The part of the library a run converts (planning.selection: globs on
    # paths below INPUTDIR, tests on a FLAC's tags), and where a FLAC's
    # outputs go by its tags (planning.template; None: the source tree).
    # Neither sent nor refused: only the master plans.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    path_format: str | None = None
    # A FLAC with a CUE sheet (a .cue named after it, or its own): one output
    # per track ("split", planning.cue), or the whole ("ignore"); the .cue
    # files' encoding when not UTF-8. A cluster job carries its tasks' tracks;
    # a worker refuses tracks in a run that does not split.
    cue: str = sent("word", "ignore", later=True, words=("split", "ignore"))
    cue_encoding: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __reduce__(self):
        # A mappingproxy cannot be pickled: the options travel as a plain dict
        # (a Dask client pickles the settings for its workers).
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["options"] = dict(self.options)
        return functools.partial(Settings, **values), ()

    @classmethod
    def sent_fields(cls) -> tuple[tuple[Field, Wire], ...]:
        """The fields cluster workers are sent, each with how it travels."""
        return tuple((f, f.metadata["wire"]) for f in fields(cls) if "wire" in f.metadata)

    def not_sent_in_use(self) -> list[str]:
        """The options this run uses that cluster workers are not sent (a
        cluster run refuses them), in the order of the fields."""
        return [
            spec.flag
            for f in fields(self)
            if (spec := f.metadata.get("not_sent")) and spec.refuses(getattr(self, f.name), f.default)
        ]


@dataclass(frozen=True)
class MasterOptions:
    """``-m``: the ZeroMQ cluster master, where it listens and how it waits."""

    bind: str = "*"
    port: int = 2019
    keys: Path | None = None  # None: the default key folder
    insecure: bool = False
    wait_workers: float = 300.0
    max_slots: int = 256


@dataclass(frozen=True)
class DaskOptions:
    """``--dask*``: a Dask scheduler by its address, its scheduler file, or a
    batch system's cluster (dask-jobqueue) of up to ``jobs`` jobs."""

    address: str | None = None
    scheduler_file: str | None = None
    jobqueue: str | None = None
    jobs: int = 4
    cores: int | None = None
    memory: str | None = None


@dataclass(frozen=True)
class DisplayOptions:
    """What the run shows: the dashboard (-C), or only failures (-q)."""

    dashboard: bool = False
    quiet: bool = False


@dataclass(frozen=True)
class WatchOptions:
    """--watch: after the run, follow the library (face/watch.py)."""

    settle: float = 30.0  # seconds a changed library stays quiet before its batch
    rescan_every: float = 3600.0  # seconds between rescans (what events miss)


# --plan-json -: the plan on standard output (and what the run prints there on standard error).
STDOUT = Path("-")


@dataclass(frozen=True)
class Request:
    """One run as the command line (or a profile under it) asks for it,
    built once by the face and handed down as data: nothing below the face
    sees argparse."""

    settings: Settings
    # Where the jobs run: None for this machine's cores, else the cluster.
    executor: MasterOptions | DaskOptions | None = None
    display: DisplayOptions = DisplayOptions()
    dry_run: bool = False
    plan_json: Path | None = None  # or STDOUT
    profile: str | None = None  # the profile's name; None: the command line alone
    notes: tuple[str, ...] = ()  # about its modes, shown before it runs
    on_done: str | None = None  # the --on-done command
    verbose: bool = False
    stop_on_hangup: bool = False
    watch: WatchOptions | None = None  # --watch: None, one run


@dataclass(frozen=True)
class Track:
    """One track of a source a CUE sheet splits (planning.cue): its samples
    ``start``..``end`` (end excluded) and the tags the sheet gives it."""

    number: int
    start: int
    end: int
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def samples(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Task:
    """One (source file, mode) pair and what to do with it."""

    source: Path
    mode: str
    output: Path
    action: Action
    size: int = 0
    # MOVE: the output to rename; SKIP: why it is skipped.
    previous: Path | None = None
    note: str = ""
    # The hash of what shaped the output (mode, options, encoder version):
    # written into the output's provenance tag and recorded in the state.
    settings_hash: str = ""
    # The track of a source a CUE sheet splits that this output holds (None: the whole source).
    track: Track | None = None


@dataclass(frozen=True)
class Job:
    """Tasks run together: the encodes of one source, fed by one decoder,
    or one task alone. An executor runs a job in one slot."""

    tasks: tuple[Task, ...]
    cost: float = 0.0  # relative CPU cost (source size x the codecs' cost)

    @property
    def source(self) -> Path:
        return self.tasks[0].source

    @property
    def action(self) -> Action:
        return self.tasks[0].action


@dataclass(frozen=True)
class SourceFacts:
    """What the state remembers of a source, to tell what changed."""

    size: int
    mtime_ns: int
    audio_md5: str  # STREAMINFO MD5, hex ("" for a copied file)
    tags_hash: str
    pictures_hash: str


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task; one row of the CSV log."""

    task: Task
    status: Status
    message: str = ""
    returncode: int = 0
    elapsed: float = -1.0  # seconds it ran; -1 (the log's "not timed", as a skip's): nothing ran
    # Read by the runner before the work, for the state (None on failure).
    facts: SourceFacts | None = None
    # A failure the run as a whole cares about (errors.DISK_FULL: the output
    # filesystem takes no more data), else empty.
    cause: str = ""
    # Seconds of audio an encode converted, for the display's rate (0: not known).
    audio: float = 0.0
    # The host that ran the task (a cluster worker's; this machine's for a
    # local run), the CSV's last column.
    host: str = ""
    # The source's loudness, measured from its decode (--replaygain fill or
    # compute), the same on each of its encodes' results; None if not measured.
    loudness: Loudness | None = None

    @property
    def status_text(self) -> str:
        """The CSV's conversion_status: SUCCESS... or ERROR..., so that
        ``grep -v SUCCESS`` lists exactly the problems."""
        if self.status is Status.FAILED:
            return f"ERROR: {self.message}" if self.message else "ERROR"
        if self.message:
            return f"SUCCESS ({self.message})"
        return "SUCCESS"


@dataclass(frozen=True)
class HostRow:
    """One worker host as a display shows it (data: executors fill it, displays draw it)."""

    host: str
    processes: int
    done: int
    rate: float
    current: list[str]
    # Why the host gets no work (unhealthy before work, or quarantined), or "".
    problem: str = ""
    # What it runs on and its encoders' versions ("FreeBSD 14.1; lame 3.100"), or "".
    about: str = ""
