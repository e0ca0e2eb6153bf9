"""Which decoder reads a source, what its failure means, and what an
output must match.

flac, the reference decoder, reads every source: it checks every frame's
CRC and the audio's MD5. A stream that does not start the file (an ID3v2 tag
or other bytes before it, ``flacstream.locate``) is fed to it from where it
starts. ffmpeg reads the others, strictly (every frame's CRC checked, any
decoding error fails the task), converting to the first frame's format:

- a stream that starts with a frame (no STREAMINFO: flac would write a WAV
  header of 0 channels);
- when flac refuses a stream for its structure, never for a corruption:
  frames that change sample rate or channel count mid-stream (flac: "sample
  rate is 48000 in frame but 44100 in STREAMINFO"), or FLAC files joined end
  to end (flac loses sync at the second ``fLaC``, which
  ``flacstream.joined`` finds; ffmpeg gets the frames without the headers
  between them, which make it drop the frames around them).

The STREAMINFO MD5 of such a stream cannot be checked (it describes the
first file, or nothing). A bit depth that changes mid-stream fails with that
cause named: no decoder takes it. Where the STREAMINFO does not give the
audio's length or MD5, what the decoder wrote is measured (``pcm.Tap``) and
the outputs are checked against that. Starts no process (a thread may feed
a decoder its source); ``runner`` runs the commands through ``fanout``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from flac2all.audio import flacstream
from flac2all.audio.pcm import Tap
from flac2all.errors import TaskError
from flac2all.model import AudioInfo

Command = list[str]  # one program's argv: a stage of a pipeline (run by running.pipeline)

# flac's words for a frame that does not match the STREAMINFO: a change of
# the audio's parameters mid-stream, not a corruption.
CHANGE = re.compile(r"ERROR, (sample rate|channels|bits-per-sample) is (\d+) in frame but (\d+) in STREAMINFO")
LOST_SYNC = "FLAC__STREAM_DECODER_ERROR_STATUS_LOST_SYNC"
# ffmpeg, strict: a frame whose CRC is wrong, or that fails to decode, is an
# error, and one error makes it exit non-zero (69).
STRICT = ["-err_detect", "crccheck+bitstream+buffer+explode", "-max_error_rate", "0"]


@dataclass(frozen=True)
class Decoder:
    """How the PCM of a source is read: by flac (``target`` None), or by
    ffmpeg converting it to ``target``; ``note`` says so in the result."""

    source: Path
    offset: int = 0  # bytes before the FLAC stream: it is read from stdin
    target: AudioInfo | None = None
    note: str = ""
    # Byte ranges (start, end) left out of what the decoder reads: the
    # headers of FLAC files joined end to end.
    skips: tuple[tuple[int, int], ...] = ()

    @property
    def input(self) -> list[str]:
        """The source as the decoder's argument: the file, or its stdin."""
        piped = self.offset or self.skips
        if self.target is not None:
            return ["-f", "flac", "-i", "pipe:0" if piped else "file:" + str(self.source)]
        return ["-"] if piped else ["--", str(self.source)]

    def command(self) -> Command:
        """The decoder writing WAV on stdout.

        Every encode starts with this stage: libFLAC checks every frame and
        the STREAMINFO MD5, and exits non-zero on a truncated or corrupt
        source, which a direct reader inside an encoder would often let pass.
        """
        if self.target is None:
            return ["flac", "--decode", "--stdout", "--silent", *self.input]
        return [*self.ffmpeg(), "-f", "wav", "pipe:1"]

    def analyze_command(self, output: Path) -> Command:
        """The ``test`` mode: a full decode, writing an analysis to ``output``
        (flac's per-frame analysis; ffmpeg's MD5 of each decoded frame)."""
        if self.target is None:
            # --analyze is --decode writing frame analysis instead of audio:
            # the same full decode and MD5 check.
            return ["flac", "--analyze", "--silent", "--output-name", str(output), *self.input]
        return [*self.ffmpeg(), "-f", "framemd5", "-y", "file:" + str(output)]

    def sized(self, info: AudioInfo) -> bool:
        """Whether the WAV it writes declares its data's size: flac's, for a
        stream whose STREAMINFO gives the total samples. RIFF pads a chunk
        of odd size with a byte that is not audio (8- or 24-bit samples, an
        odd channel count, an odd length): a reader of such a WAV must stop
        at the declared size, never at the end of the pipe. Every other
        (ffmpeg's, flac's of an unknown length) ends with its last sample."""
        return self.target is None and info.length > 0

    def ffmpeg(self) -> Command:
        assert self.target is not None
        bits = self.target.bits_per_sample
        sample = "pcm_u8" if bits <= 8 else "pcm_s16le" if bits <= 16 else "pcm_s24le" if bits <= 24 else "pcm_s32le"
        return [
            *("ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *STRICT, *self.input),
            *("-map", "0:a:0", "-map_metadata", "-1", "-fflags", "+bitexact"),
            *("-ar", str(self.target.sample_rate), "-ac", str(self.target.channels), "-c:a", sample),
        ]

    @contextmanager
    def stdin(self) -> Iterator[IO[bytes] | None]:
        """What the decoder reads: nothing (None: it opens the file), the
        source from its stream on, or a pipe fed with the source but its
        skips."""
        if not self.offset and not self.skips:
            yield None
            return
        if not self.skips:
            with open(self.source, "rb") as f:
                f.seek(self.offset)
                yield f
            return
        read, write = os.pipe()
        feeder = threading.Thread(target=feed, args=(self.source, self.pieces(), write), daemon=True)
        feeder.start()
        try:
            with open(read, "rb", buffering=0) as pipe:
                yield pipe
        finally:  # the pipe's reader is gone: the feeder's next write fails, and it ends
            feeder.join()

    def pieces(self) -> list[tuple[int, int | None]]:
        """The byte ranges the decoder reads, in order (None: to the end)."""
        pieces: list[tuple[int, int | None]] = []
        at = self.offset
        for start, end in self.skips:
            pieces.append((at, start))
            at = end
        return [*pieces, (at, None)]


def feed(source: Path, pieces: list[tuple[int, int | None]], fd: int) -> None:
    """Write those byte ranges of the source into a pipe, then close it;
    stop early, quietly, when its reader is gone."""
    try:
        with open(source, "rb") as f:
            for start, end in pieces:
                f.seek(start)
                left = None if end is None else end - start
                while left is None or left > 0:
                    chunk = f.read(1 << 18 if left is None else min(1 << 18, left))
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    if left is not None:
                        left -= len(chunk)
    except OSError:  # EPIPE: the decoder stopped reading (its failure says why)
        pass
    finally:
        os.close(fd)


def reference(source: Path, start: flacstream.Start, info: AudioInfo) -> Decoder:
    """flac, fed from where the stream starts; ffmpeg for a stream without
    STREAMINFO (flac then writes a WAV header of 0 channels). The note says
    what came before the stream, if anything did."""
    notes = []
    if start.id3_size:
        notes.append("ID3v2 tag before the FLAC stream: skipped, its fields read as tags")
    if start.junk:
        notes.append(f"{start.junk} bytes of something else before the FLAC stream: skipped")
    if start.headerless:
        notes.append("no FLAC header (no STREAMINFO): decoded from its first frame by ffmpeg")
    return Decoder(source, start.offset, info if start.headerless else None, "; ".join(notes))


def fallback(failures: Sequence[Exception | None], decoder: Decoder, info: AudioInfo) -> Decoder | TaskError | None:
    """After flac failed: ffmpeg if what it refused is the stream's structure
    (converting to ``info``, the first segment's format), flac again without
    the ID3v1/APEv2 tags after the last frame, a TaskError naming a structure
    nothing decodes, or None (a real failure: it stands)."""
    if decoder.target is not None:
        return None
    # The decoder's own words, when it is the stage blamed (blame.blame).
    said = next((f.stderr for f in failures if isinstance(f, TaskError) and f.message.startswith("flac ")), "")
    change = CHANGE.search(said)
    if change is not None:
        what, now, first = change.group(1), int(change.group(2)), int(change.group(3))
        return converted(decoder, info, what, first, now, "changes mid-stream")
    if LOST_SYNC in said and not decoder.skips and (tags := flacstream.trailing_tags(decoder.source)) is not None:
        # flac again, without the tags after the last frame: its checks whole.
        note = "; ".join(n for n in (decoder.note, "ID3v1/APEv2 tag after the FLAC stream: skipped") if n)
        return replace(decoder, skips=((tags, os.path.getsize(decoder.source)),), note=note)
    if LOST_SYNC in said:
        headers = flacstream.joined(decoder.source, decoder.offset)
        if headers:
            # ffmpeg, given the headers between the streams, drops the frames
            # around them without a word: it gets the frames alone.
            decoder = replace(decoder, skips=tuple(sorted((*decoder.skips, *((h.start, h.end) for h in headers)))))
            where = "changes between FLAC files joined end to end"
            for other in (h.format for h in headers):
                for what, now, first in (
                    ("bits-per-sample", other.bits_per_sample, info.bits_per_sample),
                    ("sample rate", other.sample_rate, info.sample_rate),
                    ("channels", other.channels, info.channels),
                ):
                    if now != first:
                        return converted(decoder, info, what, first, now, where)
            return with_note(decoder, info, f"{len(headers) + 1} FLAC files joined end to end: decoded as one stream")
    return None


def converted(decoder: Decoder, info: AudioInfo, what: str, first: int, now: int, where: str) -> Decoder | TaskError:
    if what == "bits-per-sample":
        return TaskError(f"bit depth {where} ({first} bits, then {now}): no decoder converts such a stream")
    if what == "sample rate":
        return with_note(decoder, info, f"sample rate {where}: resampled to {first} Hz")
    return with_note(decoder, info, f"channel count {where}: mixed to {first} channels")


def with_note(decoder: Decoder, info: AudioInfo, note: str) -> Decoder:
    return replace(decoder, target=info, note="; ".join(n for n in (decoder.note, note) if n))


@dataclass(frozen=True)
class Expected:
    """What an output must match: the source's length in seconds (0:
    unknown), its audio's MD5 (0: none) and, where counted, its sample
    frames as decoded."""

    length: float
    md5: int = 0
    frames: int | None = None


def expected(length: float, md5: int, decoder: Decoder, tap: Tap | None) -> Expected:
    """The source's STREAMINFO (``length``, ``md5``), or what its decoder
    wrote where that says nothing (no total, no MD5) or describes other
    audio (a stream ffmpeg converted to its first segment's format)."""
    if tap is None or tap.frames is None:
        return Expected(length, md5)
    converted = decoder.target is not None
    return Expected(
        (tap.seconds if converted or not length else length) or 0.0,
        tap.md5 if converted or not md5 else md5,
        tap.frames,
    )
