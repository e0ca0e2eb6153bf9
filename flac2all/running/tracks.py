"""The tracks of a FLAC a CUE sheet splits (``--cue split``), encoded from
one decode of it cut at their bounds (``cuts.Cuts``), checked and tagged
as any output (``checks``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from flac2all import codecs
from flac2all.audio import decoding
from flac2all.audio.decoding import Command, Expected
from flac2all.audio.loudness import Loudness
from flac2all.errors import TaskError
from flac2all.model import Settings, Task, Track
from flac2all.running.checks import (
    Done,
    Placed,
    Timed,
    check_output,
    classified,
    source_meta,
    timeout_for,
    verify,
    write_tags,
)
from flac2all.running.cuts import Cuts
from flac2all.running.outputs import commit, staged
from flac2all.running.procs import Interrupted, ProcessGroup
from flac2all.tags import gain
from flac2all.tags.source import SourceMeta, for_track

Gains = dict[Track, tuple[Loudness | None, Loudness | None]]  # a track's loudness and its album's


def encode_tracks(tasks: Sequence[Task], settings: Settings, processes: ProcessGroup) -> tuple[list[Timed], float]:
    """Encode, check and tag the tracks of a source a CUE sheet splits, in
    every mode, decoding it once (``cut``): each output checked against its
    track (length; in flac mode its samples and their MD5), tagged with the
    sheet's tags over the source's own, and with the gains --replaygain
    measures: the track's from its cut, the album's (the sheet's tracks are
    one album) from the whole decode."""
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
        failures, ended, sums, gains = cut(source, placed, meta, settings, timeout, processes)
        for (i, task, codec, tmp), failure, end in zip(placed, failures, ended, strict=True):
            own = time.monotonic()
            if processes.stopping:
                break
            assert task.track is not None
            track, album = gains.get(task.track, (None, None))
            unmeasured = gain.unmeasured(settings.replaygain, meta, True, track)
            track_meta = for_track(meta, task.track, sums.get(task.track, 0))
            track_meta = gain.with_gain(track_meta, settings.replaygain, track, album)
            expected = Expected(track_meta.info.length, track_meta.md5, task.track.samples)
            outcome: Done | Exception
            try:
                if failure is not None:
                    raise failure
                parsed = check_output(codec, tmp, track_meta, expected)
                note, tagged = write_tags(codec, tmp, track_meta, facts, task, settings, parsed)
                verify(codec, tmp, task.output, track_meta, timeout, processes, expected, tagged)
                commit(tmp, task.output)
                outcome = ("; ".join(n for n in (unmeasured, note) if n), facts)
            except Interrupted:
                break
            except TaskError as exc:
                outcome = classified(exc, settings, task.size)
            timed[i] = (outcome, end - started + time.monotonic() - own)
    return timed, meta.info.length


def cut(
    source: Path, placed: list[Placed], meta: SourceMeta, settings: Settings, timeout: float, processes: ProcessGroup
) -> tuple[list[TaskError | None], list[float], dict[Track, int], Gains]:
    """The source decoded once, its tracks cut out to their outputs'
    encoders (``cuts.Cuts``): each output's failure and end, the MD5 of
    each track's samples (for the flac mode), and each track's gains when
    --replaygain measures the source."""
    decoder = decoding.reference(source, meta.start, meta.info)
    cuts: dict[Track, list[list[Command]]] = {}
    head: Command = []
    for _, task, codec, tmp in placed:
        head, *branch = codec.commands(source, tmp, meta.info, codec.options_in(settings), decoder)
        cuts.setdefault(task.track, []).append(branch)  # type: ignore[arg-type]
    # The MD5 of each track's samples, as a FLAC's STREAMINFO has it (WAV's
    # 16- and 24-bit samples are the bytes it hashes), for the flac mode.
    hashed = meta.info.bits_per_sample in (16, 24) and any(codec.keeps_md5 for *_, codec, _ in placed)
    digests = [hashlib.md5() for _ in cuts] if hashed else []
    measured = gain.measures(settings.replaygain, meta)
    with decoder.stdin() as stdin:
        feed = (lambda n: digests[n].update) if hashed else None
        bounds = [(t.start, t.end, branches) for t, branches in cuts.items()]
        cutter = Cuts(head, bounds, timeout, processes, stdin, feed, measured)
        failures, ended = cutter.run(), cutter.ended
    sums = {track: int.from_bytes(d.digest(), "big") for track, d in zip(cuts, digests, strict=False)}
    gains = {track: (cutter.loudness(n), cutter.album) for n, track in enumerate(cuts)} if measured else {}
    return failures, ended, sums, gains
