"""Per-task logic: a batch of tasks -> one TaskResult each.

``execute_batch(tasks, settings, processes)`` turns a batch (one task, or
the encodes of one source, which share one decoder: ``fanout.Fanout``) into
one TaskResult per task. Local mode calls it from a thread pool; cluster
workers call the very same function. Outputs are staged and committed by
``outputs`` (temp name, then rename), so a file under a final name is always
complete; processes are started only through ``procs``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack

from flac2all import codecs, dirs, tags
from flac2all.audio import decoding
from flac2all.audio.decoding import Command, Decoder
from flac2all.audio.loudness import Loudness
from flac2all.audio.pcm import Tap
from flac2all.errors import TaskError, describe_oserror
from flac2all.model import Action, Settings, SourceFacts, Status, Task, TaskResult
from flac2all.running import derive
from flac2all.running.checks import (
    Done,
    Placed,
    Timed,
    audio_of,
    check_output,
    classified,
    default_timeout,
    source_meta,
    timeout_for,
    verify,
    write_tags,
)
from flac2all.running.copies import fill
from flac2all.running.fanout import run_fanout
from flac2all.running.outputs import commit, emptied, remove_empty_folders, staged
from flac2all.running.procs import Interrupted, ProcessGroup
from flac2all.running.tracks import encode_tracks
from flac2all.tags import gain
from flac2all.tags.source import for_track, not_regular

__all__ = [
    "Done",
    "Interrupted",
    "ProcessGroup",
    "check_output",
    "default_timeout",
    "execute",
    "execute_batch",
    "retag",
]

log = logging.getLogger("flac2all")


Decoded = tuple[list[TaskError | None], list[float], Tap | None]  # failures, ends, what the tap measured


def decode(
    placed: list[Placed],
    decoder: Decoder,
    meta: tags.SourceMeta,
    settings: Settings,
    timeout: float,
    processes: ProcessGroup,
) -> Decoded:
    """Run the source's decoder once for all the placed outputs; measure
    what it writes where the STREAMINFO will not say (pcm.Tap)."""
    branches: list[list[Command]] = []
    head: Command = []
    for _, _, codec, tmp in placed:
        head, *branch = codec.commands(decoder.source, tmp, meta.info, codec.options_in(settings), decoder)
        branches.append(branch)
    pcm_codecs = [codec for _, _, codec, _ in placed if codec.reads_pcm]
    hashed = any(c.keeps_md5 for c in pcm_codecs) and (not meta.md5 or decoder.target is not None)
    measured = bool(pcm_codecs) and gain.measures(settings.replaygain, meta)
    needed = bool(pcm_codecs) and (hashed or measured or not meta.info.length or decoder.target is not None)
    tap = Tap(md5=hashed, loudness=measured) if needed else None
    if not branches:
        return [], [], tap
    with decoder.stdin() as stdin:
        failures, ended = run_fanout(head, branches, timeout, processes, stdin, tap)
    return failures, ended, tap


def measure(
    decoder: Decoder, meta: tags.SourceMeta, settings: Settings, timeout: float, processes: ProcessGroup
) -> Tap | None:
    """The source's loudness for a job whose modes decode it to no PCM (the
    test mode's analysis): one more decode, read by the tap alone. None when
    --replaygain does not measure this source, or the decode failed."""
    if not gain.measures(settings.replaygain, meta):
        return None
    tap = Tap(loudness=True)
    with decoder.stdin() as stdin:
        failures, _ = run_fanout(decoder.command(), [], timeout, processes, stdin, tap)
    return tap if not any(failures) else None


def encode(
    tasks: Sequence[Task], settings: Settings, processes: ProcessGroup
) -> tuple[list[Timed], float, Loudness | None]:
    """Encode, check and tag the outputs of one source, decoding it once
    for all of them (``plan.batches`` groups the tasks); one output's
    failure leaves the others alone. Also returns the audio's length, and
    its loudness when --replaygain measures it.

    A source flac refuses for its structure (``decoding.fallback``: a format
    change mid-stream, FLAC files joined end to end) is decoded again, by
    ffmpeg, and every output made anew; the results say so."""
    started = time.monotonic()
    source = tasks[0].source
    meta, facts = source_meta(source, settings)
    timeout = timeout_for(meta, facts.size, settings)
    timed: list[Timed] = [(TaskError("not run"), 0.0)] * len(tasks)
    with ExitStack() as stack:
        placed: list[Placed] = []
        for i, task in enumerate(tasks):
            try:
                tmp = stack.enter_context(staged(task.output, settings.outdir))
                placed.append((i, task, codecs.resolve(task.mode), tmp))
            except TaskError as exc:
                timed[i] = (exc, time.monotonic() - started)
        decoder = decoding.reference(source, meta.start, meta.info)
        failures, ended, tap = decode(placed, decoder, meta, settings, timeout, processes)
        # At most twice: flac without the tags after the stream, then ffmpeg.
        while isinstance(other := decoding.fallback(failures, decoder, meta.info), Decoder):
            log.info("%s: %s", source, other.note)
            for *_, tmp in placed:
                emptied(tmp)
            decoder = other
            failures, ended, tap = decode(placed, decoder, meta, settings, timeout, processes)
        if isinstance(other, TaskError):
            failures = [other] * len(failures)
        expected = decoding.expected(meta.info.length, meta.md5, decoder, tap)
        loudness = tap.loudness if tap is not None else None
        if tap is None and any(codec.records_loudness for _, _, codec, _ in placed):
            tap = measure(decoder, meta, settings, timeout, processes)
            loudness = tap.loudness if tap is not None else None
        unmeasured = gain.unmeasured(settings.replaygain, meta, tap is not None, loudness)
        meta = gain.with_gain(meta, settings.replaygain, loudness)
        for (i, task, codec, tmp), failure, end in zip(placed, failures, ended, strict=True):
            # Its own time: until its encoder ended, plus its own check and tags.
            own = time.monotonic()
            if processes.stopping:
                break  # a stop: what is committed stands, the rest is not made (execute_batch)
            outcome: Done | Exception
            try:
                if failure is not None:
                    raise failure
                if codec.reads_pcm and expected.frames == 0:
                    raise TaskError("no audio: the decoder found no frame in the stream")
                parsed = check_output(codec, tmp, meta, expected)
                if codec.records_loudness and loudness is not None:
                    gain.record_in_analysis(tmp, loudness)
                note, tagged = write_tags(codec, tmp, meta, facts, task, settings, parsed)
                verify(codec, tmp, task.output, meta, timeout, processes, expected, tagged)
                commit(tmp, task.output)
                outcome = ("; ".join(n for n in (decoder.note, unmeasured, note) if n), facts)
            except Interrupted:
                break  # its check was killed by a stop
            except TaskError as exc:
                # Now, while this batch's temp files still take their room:
                # a write that failed without saying why counts as a full
                # disk only on a nearly full filesystem.
                outcome = classified(exc, settings, task.size)
            timed[i] = (outcome, end - started + time.monotonic() - own)
    return timed, expected.length, loudness


def retag(
    task: Task,
    settings: Settings,
    processes: ProcessGroup | None = None,
    gains: tuple[Loudness, Loudness | None] | None = None,
) -> Done:
    """Rewrite the tags and pictures of an existing output from its source,
    without re-encoding: on a copy beside it, checked and renamed over it
    when done, so the output is never seen half-tagged. ``gains``: the
    track's and its album's measurements, to write as --replaygain says."""
    codec = codecs.resolve(task.mode)
    meta, facts = source_meta(task.source, settings)
    meta = gain.with_gain(meta, settings.replaygain, *(gains or (None, None)))
    timeout = timeout_for(meta, facts.size, settings)
    if task.track is not None:
        meta = for_track(meta, task.track)
    with staged(task.output, settings.outdir, made=True) as tmp:
        try:
            # The output as it is in its held folder, never through a link.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(task.output.name, flags, dir_fd=tmp.stage.dir_fd)
            try:
                st = os.fstat(fd)
                if (problem := not_regular(st)) is not None:
                    raise problem
                os.set_blocking(fd, True)
                fill(tmp, fd, st)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TaskError(f"cannot copy the output to retag it: {describe_oserror(exc)}") from None
        audio = audio_of(codec, tmp, meta)
        note, tagged = write_tags(codec, tmp, meta, facts, task, settings)
        verify(codec, tmp, task.output, meta, timeout, processes or ProcessGroup(), audio, tagged)
        commit(tmp, task.output)
    return note or "retagged", facts


def move(task: Task, settings: Settings, processes: ProcessGroup) -> Done:
    """A renamed or moved source: rename its output, then retag it (the
    tags may name the old place, and the state learns the new one)."""
    assert task.previous is not None
    try:
        dirs.rename(task.previous, task.output, settings.outdir)
    except OSError as exc:
        raise TaskError(f"cannot move {task.previous}: {describe_oserror(exc)}") from None
    remove_empty_folders(task.previous.parent, settings.outdir)
    _, facts = retag(task, settings, processes)
    return f"moved from {task.previous}", facts


def delete(task: Task, settings: Settings, processes: ProcessGroup) -> Done:
    """An orphan output (its source is gone) that this tool wrote."""
    try:
        dirs.remove_file(task.output, settings.outdir)
    except OSError as exc:
        raise TaskError(f"cannot delete {task.output}: {describe_oserror(exc)}") from None
    remove_empty_folders(task.output.parent, settings.outdir)
    return "deleted orphan", None


def copy(task: Task, settings: Settings, processes: ProcessGroup) -> Done:
    """Copy a non-FLAC file (-c): regular files only (a link to /dev/zero
    or a FIFO would be read forever, or block), and only as many bytes as
    its size when we looked (a file still growing is not chased)."""
    try:
        st = os.stat(task.source)
    except OSError as exc:
        raise TaskError(f"cannot read: {describe_oserror(exc)}") from None
    if (problem := not_regular(st)) is not None:
        raise problem
    with staged(task.output, settings.outdir, fd_only=True) as tmp:
        try:
            # O_NONBLOCK: a FIFO put in its place since the stat cannot block the open.
            fd = os.open(task.source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise TaskError(f"cannot read: {describe_oserror(exc)}") from None
        try:
            if (problem := not_regular(os.fstat(fd))) is not None:
                raise problem
            dirs.check_source(fd, task.source)
            os.set_blocking(fd, True)
            left = fill(tmp, fd, st)
            # The times the state records, even if the source changed since.
            os.utime(tmp.stage.fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            raise TaskError(f"cannot copy: {describe_oserror(exc)}") from None
        finally:
            os.close(fd)
        if left > 0:
            raise TaskError("source shrank while being copied")
        commit(tmp, task.output)
    return "copied", SourceFacts(st.st_size, st.st_mtime_ns, "", "", "")


HANDLERS = {Action.COPY: copy, Action.RETAG: retag, Action.MOVE: move, Action.DELETE: delete}
HANDLERS[Action.CONVERT] = derive.derive  # outputs of sources that are not FLAC (--lossy, --art-max-size)
NOTES = {
    Action.SKIP: "skipped: output exists",
    Action.ORPHAN: "orphan: source gone, output kept (--delete removes it)",
}


def execute(task: Task, settings: Settings, processes: ProcessGroup) -> TaskResult:
    """Run one task to its result; see execute_batch."""
    return execute_batch((task,), settings, processes)[0]


def execute_batch(tasks: Sequence[Task], settings: Settings, processes: ProcessGroup) -> list[TaskResult]:
    """Run tasks to their results, one per task; never raises for a bad file.

    A batch of several tasks is the encodes of one source (``plan.batches``),
    which share one decoder. Raises Interrupted when the run is being
    stopped (the batch then has no result and its temp files are gone);
    but when the outputs of its first tasks were committed before the stop,
    their results come back, alone (the others have none).
    """
    first = tasks[0]
    if first.action in NOTES:
        return [TaskResult(first, Status.SKIPPED, first.note or NOTES[first.action], 0, -1.0)]
    started = time.monotonic()
    audio = 0.0
    loudness = None
    try:
        if first.action is Action.ENCODE and first.track is not None:
            timed, audio = encode_tracks(tasks, settings, processes)
        elif first.action is Action.ENCODE:
            timed, audio, loudness = encode(tasks, settings, processes)
        else:
            timed = [(HANDLERS[first.action](first, settings, processes), time.monotonic() - started)]
    except Interrupted:
        raise
    except Exception as exc:  # the source is unreadable (TaskError), or a bug
        timed = [(exc, time.monotonic() - started)] * len(tasks)
    settled: list[TaskResult] = []
    for task, (outcome, elapsed) in zip(tasks, timed, strict=True):
        try:
            settled.append(settle(task, outcome, elapsed, settings, processes, audio, loudness))
        except Interrupted:
            if not settled:
                raise
            break
    return settled


def settle(
    task: Task,
    outcome: Done | Exception,
    elapsed: float,
    settings: Settings,
    processes: ProcessGroup,
    audio: float = 0.0,
    loudness: Loudness | None = None,
) -> TaskResult:
    if isinstance(outcome, Exception):
        outcome = classified(outcome, settings, task.size)
    if isinstance(outcome, TaskError):
        if processes.stopping:
            raise Interrupted()
        return TaskResult(task, Status.FAILED, outcome.message, outcome.returncode, elapsed, cause=outcome.kind)
    if isinstance(outcome, Exception):  # a bug must fail one task, not the run
        log.error("internal error on %s (%s)", task.source, task.mode, exc_info=outcome)
        return TaskResult(task, Status.FAILED, f"internal error: {outcome!r}", 1, elapsed)
    note, facts = outcome
    return TaskResult(task, Status.SUCCESS, note, 0, elapsed, facts, audio=audio, loudness=loudness)
