"""A CUE sheet's album cut into tracks: ``Cuts`` decodes the source once
and feeds each track's sample frames, as a WAV of their own (``WavHead``),
to the encoder chains of that track's outputs, one track after the other
(``runner.encode_tracks``); the fan-out's watchdog and chains are
``fanout.Fanout``'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flac2all.audio.decoding import Command
from flac2all.audio.loudness import Loudness
from flac2all.audio.pcm import Tap
from flac2all.errors import TaskError
from flac2all.running.fanout import CHUNK, Fanout, read_exactly, widen
from flac2all.running.pipeline import Chain
from flac2all.running.procs import DEVNULL, PIPE, ProcessGroup, Stdin


class WavHead:
    """The WAV header a decoder wrote: its ``fmt`` chunk as written and the
    bytes of one sample frame; ``for_frames`` makes the header of a WAV of
    that format holding so many frames (a track cut out of it)."""

    def __init__(self, fmt: bytes, block: int) -> None:
        self.fmt = fmt
        self.block = block

    @classmethod
    def read(cls, fd: int) -> WavHead:
        """Read a RIFF/WAVE header from ``fd`` up to its data (TaskError if it is none)."""
        riff = read_exactly(fd, 12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise TaskError("the decoder wrote no WAV header")
        fmt = b""
        while True:
            head = read_exactly(fd, 8)
            if len(head) < 8:
                raise TaskError("the decoder's WAV has no data")
            size = int.from_bytes(head[4:], "little")
            if head[:4] == b"data":
                break
            body = read_exactly(fd, size + (size & 1))
            if head[:4] == b"fmt ":
                fmt = head + body
        if len(fmt) < 24:
            raise TaskError("the decoder's WAV has no format")
        return cls(fmt, int.from_bytes(fmt[20:22], "little"))

    def for_frames(self, frames: int) -> bytes:
        """The header of ``frames`` frames; past RIFF's 4 GiB its sizes say
        the most they can (as flac and ffmpeg write them), and the
        encoders read to the end of the pipe."""
        size = frames * self.block
        riff = 4 + len(self.fmt) + 8 + size + (size & 1)
        return b"RIFF" + sized(riff) + b"WAVE" + self.fmt + b"data" + sized(size)


def sized(size: int) -> bytes:
    return min(size, 0xFFFFFFFF).to_bytes(4, "little")


# A track's first sample frame and the one after its last, and the encoder
# chains of its outputs.
Cut = tuple[int, int, list[list[Command]]]


class Cuts(Fanout):
    """``head`` decoded once, its PCM cut into tracks: each track's frames,
    as a WAV of their own, to the chains of that track's outputs, one track
    after the other (a CUE sheet's album: running.runner). ``digest``, if
    given, is fed each track's PCM (for the MD5 of its samples); with
    ``measure``, each track's loudness is measured from its cut
    (``loudness``), and the album's from the whole decode, the tracks not
    made this time too (``album``). One watchdog for the
    whole: at the deadline everything still running is killed."""

    def __init__(
        self,
        head: Command,
        cuts: list[Cut],
        timeout: float,
        processes: ProcessGroup,
        stdin: Stdin = DEVNULL,
        digest: Callable[[int], Callable[[bytes], None]] | None = None,
        measure: bool = False,
    ) -> None:
        super().__init__(head, [branch for *_, branches in cuts for branch in branches], timeout, processes, stdin)
        self.cuts = cuts
        self.digest = digest
        self.measure = measure
        self.taps: list[Tap | None] = [None] * len(cuts)  # each track's (measure)
        self.whole: Tap | None = None  # the whole decode's (measure)

    def expire(self) -> None:
        """Everything killed; blamed: the encoder the copy was writing to, if
        it was (it stopped reading), else whatever still ran."""
        with self.lock:
            culprit = self.blocked_on
            for i, chain in enumerate(self.everyone):
                name = chain.running()
                if name is not None and culprit in (None, i):
                    self.expired.setdefault(i, name)
                for proc in chain.procs:
                    self.processes.kill(proc)

    def run(self) -> list[TaskError | None]:
        """Each branch's failure (None: it succeeded), in the order of the cuts."""
        try:
            self.source.start(stdin=self.stdin, stdout=PIPE)
            widen(self.source.stdout)
            self.arm()
            fd = self.source.stdout.fileno()
            try:
                wav: WavHead | None = WavHead.read(fd)
            except TaskError as exc:
                wav, unread = None, exc
            if self.measure and wav is not None:
                self.whole = Tap(loudness=True)
                self.whole(wav.for_frames(0))  # (a data size of 0: to the end of the stream)
            started: list[TaskError | None] = []
            shorts: list[TaskError | None] = []
            at = done = 0  # the chains started so far; the frames read so far
            for track, (start, end, branches) in enumerate(self.cuts):
                chains = self.chains[at : at + len(branches)]
                at += len(branches)
                if wav is None or self.expired:  # (after a time-out, no more encoders are started)
                    started += [None if wav else unread] * len(chains)
                    shorts += [None] * len(chains)
                else:
                    skip(fd, (start - done) * wav.block, self.whole)  # the tracks not made this time
                    started += self.start_chains(chains)
                    shorts += [self.feed_track(fd, wav, (end - start, track), chains, at - len(chains) + 1)] * len(
                        chains
                    )
                    done = end
                self.ended += [time.monotonic()] * len(chains)
            # To its end: the decoder checks the whole stream (its MD5).
            skip(fd, None, self.whole)
            self.source.stdout.close()
            self.source.wait()
            if self.expired and not self.processes.stopping:
                first = next(iter(self.expired))
                return [failure or self.timed_out(first) for failure in started]
            return [failure or short for failure, short in zip(self.outcome(started), shorts, strict=True)]
        finally:
            self.end()

    def feed_track(
        self, fd: int, wav: WavHead, cut: tuple[int, int], chains: list[Chain], first: int
    ) -> TaskError | None:
        """One track's frames (``cut``: how many, the track's index) from the head to its started chains (``first``:
        the first one's index in ``everyone``), then their ends; why its
        outputs lack some, if the head's output ended early (its failure,
        when it has one, says more)."""
        frames, track = cut
        sinks = {i: chain.stdin for i, chain in enumerate(chains, start=first) if chain.procs}
        header = wav.for_frames(frames)
        for i in list(sinks):
            self.write(sinks, i, header)
        feed = self.digest(track) if self.digest is not None else None
        tap = self.meter(track, header)
        left = frames * wav.block
        while left:  # read whole even when no encoder is left: the next track starts after it
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            if feed is not None:
                feed(chunk)
            if tap is not None:
                tap(chunk)
            if self.whole is not None:
                self.whole(chunk)
            for i in list(sinks):
                self.write(sinks, i, chunk)
        if left == 0 and frames * wav.block % 2:
            for i in list(sinks):
                self.write(sinks, i, b"\0")  # RIFF's pad byte after a chunk of odd size
        for sink in sinks.values():
            sink.close()
        for i, chain in enumerate(chains, start=first):
            self.blocked_on = i  # a time-out now is this encoder's: it has all it needs
            chain.wait()
        self.blocked_on = None
        return (
            TaskError(f"the decoder's audio ended {left // wav.block} samples before the track's end") if left else None
        )

    def meter(self, track: int, header: bytes) -> Tap | None:
        """The meter of a track's cut (``header``: its WAV header), with ``measure``."""
        if not self.measure:
            return None
        tap = self.taps[track] = Tap(loudness=True)
        tap(header)
        return tap

    def loudness(self, track: int) -> Loudness | None:
        """The loudness of the ``track``-th cut, None if not measured."""
        tap = self.taps[track]
        return None if tap is None else tap.loudness

    @property
    def album(self) -> Loudness | None:
        """The loudness of the whole decode (not of the tracks' blocks
        alone: whichever tracks a run makes, the same), None if not measured."""
        return None if self.whole is None or any(tap is None for tap in self.taps) else self.whole.loudness


def skip(fd: int, size: int | None, feed: Callable[[bytes], None] | None = None) -> None:
    """Read and drop ``size`` bytes of a pipe (None: to its end), each
    chunk to ``feed`` if given."""
    while size is None or size > 0:
        chunk = os.read(fd, CHUNK if size is None else min(CHUNK, size))
        if not chunk:
            return
        if feed is not None:
            feed(chunk)
        if size is not None:
            size -= len(chunk)
