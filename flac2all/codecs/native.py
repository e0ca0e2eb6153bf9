"""The codecs run by their own reference encoders: lame, oggenc, opusenc,
flac, and the ``test`` mode (a full decode by flac)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flac2all import tags
from flac2all.audio.decoding import Decoder
from flac2all.codecs.base import AudioInfo, Codec, Command
from flac2all.codecs.options import OptionFamily, Syntax


@dataclass(frozen=True)
class Lame(Codec):
    def encode_command(self, output: Path, options: tuple[str, ...]) -> Command:
        return ["lame", "--quiet", *options, "-", str(output)]


@dataclass(frozen=True)
class Oggenc(Codec):
    def encode_command(self, output: Path, options: tuple[str, ...]) -> Command:
        return ["oggenc", "--quiet", *options, "--output", str(output), "-"]


@dataclass(frozen=True)
class Opusenc(Codec):
    def encode_command(self, output: Path, options: tuple[str, ...]) -> Command:
        return ["opusenc", "--quiet", *options, "-", str(output)]


# The bit depths of the FLAC subset; flac encodes others (4 to 31 bits)
# only with --lax.
SUBSET_BITS = {8, 12, 16, 20, 24, 32}


def subset(info: AudioInfo) -> bool:
    """Whether flac encodes audio of this format without --lax."""
    return info.bits_per_sample in SUBSET_BITS and (info.sample_rate < 65536 or info.sample_rate % 10 == 0)


@dataclass(frozen=True)
class Flac(Codec):
    """Re-encode through WAV: the decoder checks the source's MD5 (flac
    reading FLAC directly does not), and the bit depth survives the pipe
    (WAVE_FORMAT_EXTENSIBLE's valid bits say 12, 15 or 20)."""

    def commands(
        self, source: Path, output: Path, info: AudioInfo, options: tuple[str, ...], decoder: Decoder | None = None
    ) -> list[Command]:
        stages = super().commands(source, output, info, options, decoder)
        if not subset(info):  # a 15-bit source stays 15-bit: legal FLAC, outside the subset
            stages[-1][-1:-1] = ["--lax"]
        if len(stages) == 2 and (decoder or Decoder(source)).sized(info):
            stages[-1].remove("--ignore-chunk-sizes")  # the size is exact; a pad byte may follow
        return stages

    def encode_command(self, output: Path, options: tuple[str, ...]) -> Command:
        # The WAV on the pipe may not know its length (a source whose
        # STREAMINFO does not, or one read by ffmpeg): read it to its end.
        # Nor its channel layout (a source without STREAMINFO): channels
        # are kept in their order, as FLAC has them anyway.
        pipe = ["--ignore-chunk-sizes", "--channel-map=none"]
        return ["flac", "--silent", *options, "--output-name", str(output), *pipe, "-"]

    def verify_command(self, output: Path) -> Command | None:
        # libFLAC's own full decode: the metadata as its decoder reads it
        # (mutagen accepts blocks libFLAC refuses) and every frame's CRC and
        # the audio's MD5.
        return ["flac", "--test", "--silent", "--", str(output)]


@dataclass(frozen=True)
class FlacTest(Codec):
    """The ``test`` mode: a full decode with flac's analysis output kept."""

    def commands(
        self, source: Path, output: Path, info: AudioInfo, options: tuple[str, ...], decoder: Decoder | None = None
    ) -> list[Command]:
        return [(decoder or Decoder(source)).analyze_command(output)]


MP3 = Lame(
    name="mp3",
    extension=".mp3",
    description="MP3 with lame",
    programs=("flac", "lame"),
    tag_family=tags.ID3,
    encoder_options=OptionFamily("lame", Syntax.ONE_DASH, "-preset standard:q 0", "lame options"),
    max_channels=2,
    max_rate=48000,
    cost=0.8,
)

VORBIS = Oggenc(
    name="vorbis",
    extension=".ogg",
    description="Ogg Vorbis with oggenc",
    programs=("flac", "oggenc"),
    tag_family=tags.OGG,
    encoder_options=OptionFamily("vorbis", Syntax.DASHES, "quality=2", "oggenc options"),
    max_bits=24,
    cost=0.9,
)

OPUS = Opusenc(
    name="opus",
    extension=".opus",
    description="Opus with opusenc",
    programs=("flac", "opusenc"),
    tag_family=tags.OGG,
    encoder_options=OptionFamily("opus", Syntax.DASHES, "vbr", "opusenc options"),
    max_bits=24,
)

FLAC = Flac(
    name="flac",
    extension=".flac",
    description="FLAC re-encoded with flac; the audio (and its MD5) stays identical",
    programs=("flac",),
    tag_family=tags.FLAC,
    encoder_options=OptionFamily("flac", Syntax.DASHES, "", "flac options"),
    keeps_md5=True,
    cost=0.2,
)

TEST = FlacTest(
    name="test",
    extension=".ana",
    description="verify the source: full decode and MD5 check by flac, analysis kept as .ana",
    programs=("flac",),
    tag_family=tags.NONE,
    checks_length=False,
    tagged=False,
    reads_pcm=False,
    records_loudness=True,
    cost=0.05,
)
