"""What every output goes through before it is committed, whichever job
made it (``runner``'s encodes and retags, ``tracks``' CUE-split tracks):
the source's metadata and the time it may take, the checks of the file an
encoder wrote (``check_output``, ``verify``), its tags, and the one
classification of a failure (a full disk)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mutagen
from mutagen.flac import FLAC, StreamInfo

from flac2all import codecs, tags
from flac2all.audio.decoding import Expected
from flac2all.errors import DISK_FULL, TaskError, disk_full_cause
from flac2all.model import Settings, SourceFacts, Task
from flac2all.running.pipeline import run_pipeline
from flac2all.running.procs import ProcessGroup

log = logging.getLogger("flac2all")


def default_timeout(length: float) -> float:
    """Seconds a task may take: generous (a quarter of real time plus two
    minutes), but a hung encoder never blocks a run forever."""
    return 120.0 + 4.0 * length


PADDING_FRAMES = 2048


def check_output(
    codec: codecs.Codec,
    tmp: Path,
    meta: tags.SourceMeta,
    expected: Expected | None = None,
    audio: mutagen.FileType | None = None,
) -> mutagen.FileType | None:
    """Refuse an output that is empty, shorter or longer than its source, or
    (for flac) whose audio differs from the source's. Returns the output
    as mutagen opened it (None if it was not opened), for its tags;
    ``audio``: as mutagen has it already (read back after its tags were
    written), instead of opening it again."""
    expected = expected or Expected(meta.info.length, meta.md5)
    try:
        if tmp.stat().st_size == 0:
            raise TaskError("encoder wrote an empty file")
    except FileNotFoundError:
        raise TaskError("encoder wrote no output file") from None
    if not codec.checks_length:
        return None
    try:
        out = audio if audio is not None else codec.tag_family.load(tmp)
    except mutagen.MutagenError as exc:
        raise TaskError(f"encoder output is unreadable: {exc}") from None
    if out is None and codec.tag_family.carries_tags:
        raise TaskError(f"encoder output is not a {codec.extension} file mutagen can read")
    length = getattr(getattr(out, "info", None), "length", None)
    if length and expected.length:
        # Plus two codec frames of padding (aac's 1024 priming samples are 0.13 s at 8 kHz).
        rate = getattr(out.info, "sample_rate", 0)
        tolerance = 0.1 + 0.005 * expected.length + (PADDING_FRAMES / rate if rate else 0)
        if abs(length - expected.length) > tolerance:
            raise TaskError(f"output lasts {length:.2f} s but the source {expected.length:.2f} s")
    if codec.keeps_md5 and expected.frames is not None:
        if not isinstance(out, FLAC) or out.info.total_samples != expected.frames:
            raise TaskError(f"re-encoded audio has not the {expected.frames} samples decoded from the source")
    if codec.keeps_md5 and expected.md5:
        if not isinstance(out, FLAC) or out.info.md5_signature != expected.md5:
            raise TaskError("re-encoded audio differs from the source (MD5 mismatch)")
    return out


def verify(
    codec: codecs.Codec,
    tmp: Path,
    final: Path,
    meta: tags.SourceMeta,
    timeout: float,
    processes: ProcessGroup,
    expected: Expected | None = None,
    tagged: mutagen.FileType | None = None,
) -> None:
    """The last check, on the output as it will be renamed into place (tags
    and all): the checks of check_output again (on ``tagged``, the file as
    the tag writing read it back, if it did), and the codec's own test of
    the file (flac --test)."""
    if codec.tagged:
        check_output(codec, tmp, meta, expected, tagged)
    command = codec.verify_command(tmp)
    if command is None:
        return
    try:
        run_pipeline([command], timeout, processes)
    except TaskError as exc:
        # The user never sees the temp name (flac says the base name alone).
        message = exc.message.replace(str(tmp), final.name).replace(tmp.name, final.name)
        raise TaskError(f"output fails its check once tagged: {message}", exc.returncode) from None


Done = tuple[str, SourceFacts | None]  # a task done: the note for its result, the facts for the state


def source_meta(source: Path, settings: Settings) -> tuple[tags.SourceMeta, SourceFacts]:
    """The source's metadata, ready to be written (with folder art if
    asked), and its facts for the state."""
    meta, facts = tags.read_source_facts(source)
    if settings.embed_folder_art:
        meta = tags.with_folder_art(meta, source.parent)
    return meta, facts


def write_tags(
    codec: codecs.Codec,
    tmp: Path,
    meta: tags.SourceMeta,
    facts: SourceFacts,
    task: Task,
    settings: Settings,
    audio: Any = None,
) -> tuple[str, mutagen.FileType | None]:
    """Write the source's tags, and the task's provenance tag, into ``tmp``
    (``audio``: as check_output opened it, so that an output is parsed once
    for its checks and tags). Returns the note, and the output as the
    writing read it back (``TagFamily.tag``), if it did."""
    meta = tags.with_provenance(meta, facts, task.settings_hash)
    warnings, now = codec.tag_family.tag(tmp, meta, settings, audio) if codec.tagged else ([], None)
    for warning in warnings:
        log.warning("%s: %s", task.source, warning)
    return "; ".join(warnings), now


Timed = tuple[Done | Exception, float]  # a task done (or why not) and the seconds it took


Placed = tuple[int, Task, codecs.Codec, Path]  # (index in the batch, task, its codec, its temp output)


def timeout_for(meta: tags.SourceMeta, size: int, settings: Settings) -> float:
    """The run's --timeout, else default_timeout of the source's length."""
    if settings.timeout is not None:
        return settings.timeout
    length = meta.info.length
    if not length:  # not in the STREAMINFO: what its size allows, at 20:1 (near silence)
        info = meta.info
        length = 20.0 * size / max(1, info.sample_rate * info.channels * ((info.bits_per_sample + 7) // 8))
    return default_timeout(length)


def audio_of(codec: codecs.Codec, output: Path, meta: tags.SourceMeta) -> Expected:
    """What a retagged output must still be: the audio it has (its length; a
    FLAC's samples and MD5), checked when it was encoded. Not the source's
    STREAMINFO, which says nothing of a stream ffmpeg converted."""
    try:
        info = getattr(codec.tag_family.load(output), "info", None)
    except mutagen.MutagenError:
        info = None
    if info is None:
        return Expected(meta.info.length, meta.md5)
    if isinstance(info, StreamInfo):
        return Expected(info.length, info.md5_signature, info.total_samples)
    return Expected(getattr(info, "length", 0.0) or 0.0)


def classified(exc: Exception, settings: Settings, needed: int = 0) -> Exception:
    """``exc``, or the one message for a full output filesystem if that is
    what it shows (errors.disk_full_cause), marked DISK_FULL for the engine."""
    if isinstance(exc, TaskError) and exc.kind:
        return exc
    cause = disk_full_cause(exc, settings.outdir, needed)
    if cause is None:
        return exc
    return TaskError(cause, exc.returncode if isinstance(exc, TaskError) else 1, DISK_FULL)
