"""Before any file is touched: run each mode's encoder once, with the run's
options, on a fraction of a second of generated audio.

A wrong option (``--lame-options='-V 2'``, copied from a forum) then stops
the run at once with the encoder's own message (exit 2), instead of failing
every file with a message that may blame another program.
"""

from __future__ import annotations

import math
import shlex
import struct
import tempfile
import time
import wave
from pathlib import Path

from flac2all.codecs import Codec
from flac2all.errors import TaskError, UsageError
from flac2all.model import Settings
from flac2all.running.pipeline import Chain
from flac2all.running.procs import ProcessGroup

RATE, SECONDS = 44100, 0.25
TIMEOUT = 60.0


def write_probe_wav(path: Path) -> None:
    """A quarter of a second of a quiet 440 Hz tone, 16-bit stereo."""
    frames = bytearray()
    for i in range(int(RATE * SECONDS)):
        v = int(3000 * math.sin(2 * math.pi * 440 * i / RATE))
        frames += struct.pack("<hh", v, v)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))


def check_options(selected: tuple[Codec, ...], settings: Settings) -> None:
    """Raise UsageError, naming the mode, its options and the encoder's own
    message, if an encoder refuses this run's options."""
    encoding = [c for c in selected if c.encoder_options is not None]
    if not encoding:
        return
    processes = ProcessGroup()
    with tempfile.TemporaryDirectory(prefix="flac2all-probe-") as folder:
        wav = Path(folder) / "probe.wav"
        write_probe_wav(wav)
        for codec in encoding:
            options = codec.options_in(settings)
            argv = codec.encode_command(Path(folder) / f"out-{codec.folder}{codec.extension}", options)
            failure = run_once(argv, wav, processes)
            if failure is not None:
                flag = codec.encoder_options.flag
                raise UsageError(
                    f"mode {codec.name}: {argv[0]} refuses the options {shlex.join(options) or '(none)'}"
                    f" (from {flag}): {failure}"
                )


def run_once(argv: list[str], wav: Path, processes: ProcessGroup) -> str | None:
    """The encoder's failure on the probe audio, or None if it encoded it."""
    chain = Chain([argv], processes)
    try:
        with open(wav, "rb") as audio:
            chain.start(stdin=audio.fileno())
        chain.wait(time.monotonic() + TIMEOUT, TIMEOUT)
        failure = chain.failure()
    except TaskError as exc:  # not installed, or timed out
        failure = exc
    finally:
        chain.close()
    return None if failure is None else failure.message
