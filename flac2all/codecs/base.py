"""What every codec is: a frozen record of facts plus one argv builder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flac2all.audio.decoding import Command, Decoder
from flac2all.codecs.options import OptionFamily
from flac2all.model import AudioInfo, Settings
from flac2all.tags.family import TagFamily


def adapt_command(channels: int | None, rate: int | None, bits: int, floats: bool = False) -> Command:
    """ffmpeg between decoder and encoder: downmix, resample and/or convert
    to 32-bit float WAV (``floats``: for an encoder that takes no 32-bit
    integers)."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-f", "wav", "-i", "pipe:0"]
    if channels is not None:
        argv += ["-ac", str(channels)]
    if rate is not None:
        argv += ["-ar", str(rate)]
    sample = "pcm_f32le" if floats else "pcm_s16le" if bits <= 16 else "pcm_s24le"
    argv += ["-c:a", sample, "-f", "wav", "pipe:1"]
    return argv


def resample_target(rate: int, max_rate: int) -> int:
    """The rate to resample an over-limit source to: 44.1 kHz for the 44.1
    family (88.2, 176.4 kHz), else max_rate (96, 192 kHz and odd rates)."""
    if rate % 44100 == 0 and max_rate >= 44100:
        return 44100
    return max_rate


@dataclass(frozen=True)
class Codec:
    """One output mode: how to name, build and tag its outputs.

    ``commands`` returns the pipeline: a list of argv lists, each stage's
    stdout feeding the next stage's stdin. The last stage writes ``output``.
    """

    name: str
    extension: str
    description: str
    programs: tuple[str, ...]
    tag_family: TagFamily  # how its outputs carry tags (flac2all.tags)
    # The options this codec's encoder takes (flag, syntax, default); None
    # for a mode that runs no encoder.
    encoder_options: OptionFamily | None = None
    # What the encoder cannot take; a source beyond it is adapted by an
    # ffmpeg stage (downmix to stereo, resample), never failed.
    max_channels: int | None = None
    max_rate: int | None = None
    # The deepest integer samples it takes; deeper ones (32-bit) are
    # converted to float by the ffmpeg stage.
    max_bits: int | None = None
    # Whether the output's duration can be read back and compared with the
    # source's (a last guard against an encoder that stopped early).
    checks_length: bool = True
    # Whether the output must decode to exactly the source's samples
    # (checked by comparing STREAMINFO MD5s).
    keeps_md5: bool = False
    # Whether outputs of this mode are audio that gets the source's tags.
    tagged: bool = True
    # Whether the pipeline starts with decode_command: the modes asked of one
    # source then share that one decoder (runner.run_fanout).
    reads_pcm: bool = True
    # Whether its output (an analysis) records the source's loudness when
    # --replaygain measures it (tags.gain.record_in_analysis).
    records_loudness: bool = False
    # CPU cost per byte of source, relative to opusenc --vbr (measured with
    # the default options on music-like content): the plan starts the most
    # expensive tasks first, so a run does not end with one long encode on
    # one core while the others idle.
    cost: float = 1.0

    @property
    def option_family(self) -> str | None:
        """The key of this codec's options in ``Settings.options``."""
        return self.encoder_options.name if self.encoder_options else None

    @property
    def default_options(self) -> tuple[str, ...]:
        """The options used when ``Settings.options`` has none for the family."""
        return self.encoder_options.defaults if self.encoder_options else ()

    def options_in(self, settings: Settings) -> tuple[str, ...]:
        """This run's encoder options: the user's, else the family's defaults."""
        # (The defaults only when needed: they are parsed from text, and this
        # is asked once an output.)
        options = settings.options.get(self.option_family or "")
        return tuple(options) if options is not None else self.default_options

    @property
    def folder(self) -> str:
        """The per-mode output folder name (``f:alac`` -> ``f_alac``)."""
        return self.name.replace(":", "_")

    def adaptation(self, info: AudioInfo) -> tuple[int | None, int | None]:
        """(channels, rate) to convert the source to, None where it fits."""
        channels = rate = None
        if self.max_channels is not None and info.channels > self.max_channels:
            channels = self.max_channels
        if self.max_rate is not None and info.sample_rate > self.max_rate:
            rate = resample_target(info.sample_rate, self.max_rate)
        return channels, rate

    def commands(
        self, source: Path, output: Path, info: AudioInfo, options: tuple[str, ...], decoder: Decoder | None = None
    ) -> list[Command]:
        """The pipeline: decode (flac, unless ``decoder`` says otherwise),
        adapt if needed, encode into ``output``."""
        stages = [(decoder or Decoder(source)).command()]
        channels, rate = self.adaptation(info)
        floats = self.max_bits is not None and info.bits_per_sample > self.max_bits
        if channels is not None or rate is not None or floats:
            stages.append(adapt_command(channels, rate, info.bits_per_sample, floats))
        stages.append(self.encode_command(output, options))
        return stages

    def encode_command(self, output: Path, options: tuple[str, ...]) -> Command:
        """The encoder stage, reading WAV on stdin and writing ``output``."""
        raise NotImplementedError(self.name)

    def verify_command(self, output: Path) -> Command | None:
        """A program that fails when a finished (tagged) output is not
        valid, or None where reading it back with mutagen is the check."""
        return None
