"""The shape of every cluster message: what ``protocol.decode`` accepts.

A msgspec Struct per message type, with the range and length of each field
(msgspec constraints: a refusal names the field, as "Expected `int` <= 256 -
at `$.slots`"), and ``decode``, which parses a frame against all of them at
once: an array where an object belongs, a field nested where none is, an
unknown field or a lone surrogate is refused where it starts. What a value
means (a path inside the run, a codec this node has) is each
``protocol.*_from_wire``'s.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from flac2all.audio.loudness import BINS as LOUDNESS_BINS
from flac2all.cluster import jobs
from flac2all.cluster.wire import (
    ANOTHER_VERSION,
    MAX_ID,
    MAX_MESSAGE,
    MAX_SIZE,
    VERSION,
    ProtocolError,
    other_version,
    printable,
)
from flac2all.errors import DISK_FULL
from flac2all.model import Status

# Types and ranges (msgspec constraints: a refusal names the field, as
# "Expected `int` <= 256 - at `$.slots`"); what a value means (a path inside
# the run, a codec this node has) is checked by each ``*_from_wire``. Every
# string and list is bounded by the frame's size at least.

# Slots one hello may declare (a worker process has 1); the master caps
# them lower if told to (--max-slots).
MAX_SLOTS = 256
MAX_HOST = 255
MAX_RESULT_MESSAGE = 2000
MAX_ELAPSED = 1e7  # seconds, some four months
# Why a task failed, when the cause is the run's or the node's rather than
# the file's: a full output disk stops the run; the others are a worker's
# environment (the master requeues the task elsewhere and counts them
# against the worker).
SOURCE_MISSING = "source-missing"  # the worker cannot see or read the source
OUTPUT_UNWRITABLE = "output-unwritable"  # the worker cannot write the output folder
ENCODER_MISSING = "encoder-missing"  # the worker lacks a program of the mode
ENVIRONMENT = (SOURCE_MISSING, OUTPUT_UNWRITABLE, ENCODER_MISSING)
CAUSES = ("", DISK_FULL, *ENVIRONMENT)

Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]  # a task id or attempt
Size = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]
Hex = Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{0,64}\Z")]
# A task's settings hash: its mode's, then for a CUE track the hashes of its
# bounds and of its tags (planning.plan).
SettingsHash = Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{0,64}(:[0-9a-f]{1,64}){0,2}\Z")]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # as SQLite stores it


class Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    v: int


class HeartbeatMessage(Message, tag="heartbeat"):
    pass


class ByeMessage(Message, tag="bye"):
    pass


class ShutdownMessage(Message, tag="shutdown"):
    pass


class ResetMessage(Message, tag="reset"):
    pass


class HelloMessage(Message, tag="hello"):
    session: Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{32}\Z")]
    host: Annotated[str, msgspec.Meta(max_length=MAX_HOST)]
    pid: Annotated[int, msgspec.Meta(gt=0, lt=2**32)]
    slots: Annotated[int, msgspec.Meta(ge=1, le=MAX_SLOTS)]


MAX_PROGRAMS = 16
MAX_SYSTEM = 100
MAX_VERSION = 200
# The master's program -> version line: a few short names, short lines.
Versions = Annotated[
    dict[
        Annotated[str, msgspec.Meta(pattern=r"\A[a-z0-9_.+-]{1,32}\Z")],
        Annotated[str, msgspec.Meta(max_length=MAX_VERSION)],
    ],
    msgspec.Meta(max_length=MAX_PROGRAMS),
]


class ChecksBody(msgspec.Struct, forbid_unknown_fields=True):
    sources: list[list[str | int]]
    probe: str
    versions: Versions = msgspec.field(default_factory=dict)


# A settings value, as jobs.KINDS sends them (a path, a choice; modes;
# options; a flag; seconds, a whole number; or none).
SettingValue = str | bool | int | float | None | list[str] | dict[str, list[str]]


class WelcomeMessage(Message, tag="welcome"):
    settings: dict[str, SettingValue]
    heartbeat: float
    dead_after: float
    checks: ChecksBody


class HealthMessage(Message, tag="health"):
    problem: str
    modes: list[str]
    lacks: dict[str, str] = msgspec.field(default_factory=dict)
    # What the worker runs on ("FreeBSD 14.1") and its encoders' versions
    # (program -> version), for the master's summary.
    system: Annotated[str, msgspec.Meta(max_length=MAX_SYSTEM)] = ""
    versions: Versions = msgspec.field(default_factory=dict)


class ReadyMessage(Message, tag="ready"):
    credit: Annotated[int, msgspec.Meta(ge=0, le=MAX_SLOTS)]


class ResultMessage(Message, tag="result"):
    id: Id
    attempt: Id
    status: Status
    message: Annotated[str, msgspec.Meta(max_length=MAX_RESULT_MESSAGE)]
    returncode: Annotated[int, msgspec.Meta(ge=-(2**31), lt=2**32)]
    elapsed: Annotated[float, msgspec.Meta(ge=-1.0, le=MAX_ELAPSED)]  # -1: not timed (a skip)
    # size, mtime_ns, audio_md5, tags_hash, pictures_hash
    facts: tuple[Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)], Int64, Hex, Hex, Hex] | None = None
    cause: Literal[CAUSES] = ""
    # The source's loudness (--replaygain fill, compute): Loudness.to_wire's
    # fields, checked by Loudness.from_wire.
    loudness: dict[str, float | None | Annotated[list[int], msgspec.Meta(max_length=LOUDNESS_BINS)]] | None = None


# A CUE track (model.Track): its number, its sample frames (FLAC counts
# them in 36 bits) and its tags, Vorbis comment names and short values.
MAX_TRACK_TAGS = 64
MAX_TAG_VALUE = 1000
Frame = Annotated[int, msgspec.Meta(ge=0, lt=2**36)]
TagName = Annotated[str, msgspec.Meta(pattern=r"\A[\x20-\x3c\x3e-\x7d]{1,64}\Z")]
TagValue = Annotated[str, msgspec.Meta(max_length=MAX_TAG_VALUE)]


class TrackBody(msgspec.Struct, forbid_unknown_fields=True):
    number: Annotated[int, msgspec.Meta(ge=0, le=999)]
    start: Frame
    end: Frame
    tags: Annotated[list[tuple[TagName, TagValue]], msgspec.Meta(max_length=MAX_TRACK_TAGS)]


class JobTask(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    attempt: Id
    mode: str
    output: str
    settings_hash: SettingsHash


class CopyTask(JobTask, forbid_unknown_fields=True):
    source: str
    size: Size


class EncodeTask(JobTask, forbid_unknown_fields=True):
    # The CUE track the output holds (model.Track): sent only when there is
    # one, so a job of a master before it reads as it did.
    track: TrackBody | None = None


Tasks = Annotated[list[EncodeTask], msgspec.Meta(min_length=1, max_length=jobs.MAX_JOB)]


class JobMessage(Message, tag="job"):
    source: str
    action: Literal[tuple(a.value for a in jobs.WORKER_ACTIONS)]
    size: Size
    tasks: Tasks


class CopiesMessage(Message, tag="copies"):
    tasks: Annotated[list[CopyTask], msgspec.Meta(min_length=1, max_length=jobs.MAX_JOB)]


PARSER = msgspec.json.Decoder(
    HeartbeatMessage
    | ByeMessage
    | ShutdownMessage
    | ResetMessage
    | HelloMessage
    | WelcomeMessage
    | HealthMessage
    | ReadyMessage
    | ResultMessage
    | JobMessage
    | CopiesMessage
)


def decode(frame: bytes) -> dict:
    """A frame -> its message as a dict (its shape and ranges checked, what
    its values mean not yet: that is each ``*_from_wire``'s, which reads
    only what ``decode`` returned)."""
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError("oversize frame")
    try:
        msg = PARSER.decode(frame)
    except msgspec.DecodeError as exc:  # ValidationError included
        if other_version(frame):
            raise ProtocolError(ANOTHER_VERSION) from None
        raise ProtocolError(printable(str(exc))) from None
    if msg.v != VERSION:
        raise ProtocolError(ANOTHER_VERSION)
    return msgspec.to_builtins(msg)
