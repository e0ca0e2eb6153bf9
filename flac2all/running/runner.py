"""Per-task logic: a batch of tasks -> one TaskResult each.

``execute_batch(tasks, settings, processes)`` turns a batch (one task, or
the encodes of one source, which share one decoder: ``fanout.Fanout``) into
one TaskResult per task. Local mode calls it from a thread pool; cluster
workers call the very same function. Outputs are staged and committed by
``outputs`` (temp name, then rename), so a file under a final name is always
complete; processes are started only through ``procs``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mutagen
from mutagen.flac import FLAC, StreamInfo

from flac2all import codecs, dirs, tags
from flac2all.audio import decoding
from flac2all.audio.decoding import Command, Decoder, Expected
from flac2all.audio.loudness import Loudness
from flac2all.audio.pcm import Tap
from flac2all.errors import DISK_FULL, TaskError, describe_oserror, disk_full_cause
from flac2all.model import Action, Settings, SourceFacts, Status, Task, TaskResult, Track
from flac2all.running import derive
from flac2all.running.copies import fill
from flac2all.running.cuts import Cuts
from flac2all.running.fanout import run_fanout
from flac2all.running.outputs import commit, emptied, remove_empty_folders, staged
from flac2all.running.pipeline import run_pipeline
from flac2all.running.procs import Interrupted, ProcessGroup
from flac2all.tags import gain
from flac2all.tags.source import for_track, not_regular

__all__ = ["Interrupted", "ProcessGroup", "execute", "execute_batch", "retag"]

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


def timeout_for(meta: tags.SourceMeta, size: int, settings: Settings) -> float:
    """The run's --timeout, else default_timeout of the source's length."""
    if settings.timeout is not None:
        return settings.timeout
    length = meta.info.length
    if not length:  # not in the STREAMINFO: what its size allows, at 20:1 (near silence)
        info = meta.info
        length = 20.0 * size / max(1, info.sample_rate * info.channels * ((info.bits_per_sample + 7) // 8))
    return default_timeout(length)


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


def encode_tracks(tasks: Sequence[Task], settings: Settings, processes: ProcessGroup) -> tuple[list[Timed], float]:
    """Encode, check and tag the tracks of a source a CUE sheet splits, in
    every mode, decoding it once (``cuts.Cuts``): each track's samples, cut
    at its bounds, to its outputs' encoders, one track after the other; each
    output checked against its track (length; in flac mode its samples and
    their MD5), tagged with the sheet's tags over the source's own."""
    started = time.monotonic()
    source = tasks[0].source
    meta, facts = source_meta(source, settings)
    timeout = timeout_for(meta, facts.size, settings)
    timed: list[Timed] = [(TaskError("not run"), 0.0)] * len(tasks)
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i].track.start, i))  # type: ignore[union-attr]
    with ExitStack() as stack:
        placed: list[Placed] = []
        for i in order:
            try:
                tmp = stack.enter_context(staged(tasks[i].output, settings.outdir))
                placed.append((i, tasks[i], codecs.resolve(tasks[i].mode), tmp))
            except TaskError as exc:
                timed[i] = (exc, time.monotonic() - started)
        decoder = decoding.reference(source, meta.start, meta.info)
        cuts: dict[Track, list[list[Command]]] = {}
        head: Command = []
        for _, task, codec, tmp in placed:
            head, *branch = codec.commands(source, tmp, meta.info, codec.options_in(settings), decoder)
            cuts.setdefault(task.track, []).append(branch)
        # The MD5 of each track's samples, as a FLAC's STREAMINFO has it (WAV's
        # 16- and 24-bit samples are the bytes it hashes), for the flac mode.
        hashed = meta.info.bits_per_sample in (16, 24) and any(codec.keeps_md5 for *_, codec, _ in placed)
        digests = [hashlib.md5() for _ in cuts] if hashed else []
        with decoder.stdin() as stdin:
            feed = (lambda n: digests[n].update) if hashed else None
            cut = Cuts(
                head, [(t.start, t.end, branches) for t, branches in cuts.items()], timeout, processes, stdin, feed
            )
            failures, ended = cut.run(), cut.ended
        sums = {track: int.from_bytes(d.digest(), "big") for track, d in zip(cuts, digests, strict=False)}
        for (i, task, codec, tmp), failure, end in zip(placed, failures, ended, strict=True):
            own = time.monotonic()
            if processes.stopping:
                break
            assert task.track is not None
            track_meta = for_track(meta, task.track, sums.get(task.track, 0))
            expected = Expected(track_meta.info.length, track_meta.md5, task.track.samples)
            outcome: Done | Exception
            try:
                if failure is not None:
                    raise failure
                parsed = check_output(codec, tmp, track_meta, expected)
                note, tagged = write_tags(codec, tmp, track_meta, facts, task, settings, parsed)
                verify(codec, tmp, task.output, track_meta, timeout, processes, expected, tagged)
                commit(tmp, task.output)
                outcome = (note, facts)
            except Interrupted:
                break
            except TaskError as exc:
                outcome = classified(exc, settings, task.size)
            timed[i] = (outcome, end - started + time.monotonic() - own)
    return timed, meta.info.length


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


def classified(exc: Exception, settings: Settings, needed: int = 0) -> Exception:
    """``exc``, or the one message for a full output filesystem if that is
    what it shows (errors.disk_full_cause), marked DISK_FULL for the engine."""
    if isinstance(exc, TaskError) and exc.kind:
        return exc
    cause = disk_full_cause(exc, settings.outdir, needed)
    if cause is None:
        return exc
    return TaskError(cause, exc.returncode if isinstance(exc, TaskError) else 1, DISK_FULL)


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
