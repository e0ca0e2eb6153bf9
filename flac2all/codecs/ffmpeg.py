"""Codecs run by ffmpeg: the ``aac`` mode and every ``f:<encoder>`` mode.

One table maps an ffmpeg encoder to its container; ffmpeg itself picks a
sample rate, sample format and channel layout the encoder accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flac2all import tags
from flac2all.audio.decoding import Decoder
from flac2all.codecs.base import AudioInfo, Codec, Command
from flac2all.codecs.options import OptionFamily, Syntax
from flac2all.tags import TagFamily

# encoder -> (extension, ffmpeg muxer, tag family)
CONTAINERS: dict[str, tuple[str, str, TagFamily]] = {
    "aac": (".m4a", "ipod", tags.MP4),
    "libfdk_aac": (".m4a", "ipod", tags.MP4),
    "alac": (".m4a", "ipod", tags.MP4),
    "libmp3lame": (".mp3", "mp3", tags.ID3),
    "libshine": (".mp3", "mp3", tags.ID3),
    "libopus": (".opus", "opus", tags.OGG),
    "opus": (".opus", "opus", tags.OGG),
    "libvorbis": (".ogg", "ogg", tags.OGG),
    "vorbis": (".ogg", "ogg", tags.OGG),
    "flac": (".flac", "flac", tags.FLAC),
    "mp2": (".mp2", "mp2", tags.NONE),
    "mp2fixed": (".mp2", "mp2", tags.NONE),
    "libtwolame": (".mp2", "mp2", tags.NONE),
    "ac3": (".ac3", "ac3", tags.NONE),
    "ac3_fixed": (".ac3", "ac3", tags.NONE),
    "eac3": (".eac3", "eac3", tags.NONE),
    "dca": (".dts", "dts", tags.NONE),
    "truehd": (".thd", "truehd", tags.NONE),
    "mlp": (".mlp", "mlp", tags.NONE),
    "wavpack": (".wv", "wv", tags.NONE),
    "tta": (".tta", "tta", tags.NONE),
    "wmav1": (".wma", "asf", tags.NONE),
    "wmav2": (".wma", "asf", tags.NONE),
    "libspeex": (".spx", "spx", tags.NONE),
    "libgsm": (".gsm", "gsm", tags.NONE),
    "g722": (".g722", "g722", tags.NONE),
    "libcodec2": (".c2", "codec2", tags.NONE),
    "dfpwm": (".dfpwm", "dfpwm", tags.NONE),
    "aptx": (".aptx", "aptx", tags.NONE),
    "aptx_hd": (".aptxhd", "aptx_hd", tags.NONE),
    "pcm_alaw": (".wav", "wav", tags.NONE),
    "pcm_mulaw": (".wav", "wav", tags.NONE),
    "adpcm_ima_wav": (".wav", "wav", tags.NONE),
    "adpcm_ms": (".wav", "wav", tags.NONE),
}
# Anything not above goes into Matroska audio, which carries any codec.
FALLBACK = (".mka", "matroska", tags.NONE)


def container_for(encoder: str) -> tuple[str, str, TagFamily]:
    """(extension, muxer, tag family) for an ffmpeg audio encoder."""
    if encoder in CONTAINERS:
        return CONTAINERS[encoder]
    if encoder.startswith("pcm_"):
        if encoder.endswith("be"):
            return (".aiff", "aiff", tags.NONE)
        return (".wav", "wav", tags.NONE)
    return FALLBACK


def audio_encoders() -> dict[str, tuple[str, bool]]:
    """ffmpeg's audio encoders (``tools.ffmpeg_encoders``), probed only when
    an f: mode is named: the registry itself starts no process."""
    from flac2all import tools

    return tools.ffmpeg_encoders()


@dataclass(frozen=True)
class Ffmpeg(Codec):
    encoder: str = ""
    muxer: str = ""
    experimental: bool = False

    def commands(
        self, source: Path, output: Path, info: AudioInfo, options: tuple[str, ...], decoder: Decoder | None = None
    ) -> list[Command]:
        return [(decoder or Decoder(source)).command(), self.encode_command(output, options)]

    def encode_command(self, output: Path, options: tuple[str, ...]) -> Command:
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-f", "wav", "-i", "pipe:0"]
        # Tags are written afterwards from the source, never by ffmpeg.
        argv += ["-map_metadata", "-1", "-vn", "-c:a", self.encoder]
        if self.experimental:
            argv += ["-strict", "experimental"]
        # "file:" so that no name is read as a protocol or an option.
        argv += [*options, "-f", self.muxer, "-y", "file:" + str(output)]
        return argv


# Every f:ENC mode takes these; the registry lists them although no codec
# of the fixed table does.
FFMPEG_OPTIONS = OptionFamily("ffmpeg", Syntax.COMMA, "-b:a 128k", "ffmpeg options for f:<encoder> modes")

AAC = Ffmpeg(
    name="aac",
    extension=".m4a",
    description="AAC in .m4a with ffmpeg's native encoder",
    programs=("flac", "ffmpeg"),
    tag_family=tags.MP4,
    encoder_options=OptionFamily("aac", Syntax.COMMA, "-b:a 192k", "ffmpeg options for the aac mode"),
    encoder="aac",
    muxer="ipod",
    cost=1.4,
)


def ffmpeg_codec(encoder: str) -> Codec | None:
    """The ``f:<encoder>`` codec, or None if ffmpeg has no such audio encoder."""
    encoders = audio_encoders()
    if encoder not in encoders:
        return None
    description, experimental = encoders[encoder]
    extension, muxer, family = container_for(encoder)
    return Ffmpeg(
        name="f:" + encoder,
        extension=extension,
        description=f"{description} with ffmpeg, in {extension}",
        programs=("flac", "ffmpeg"),
        tag_family=family,
        encoder_options=FFMPEG_OPTIONS,
        encoder=encoder,
        muxer=muxer,
        experimental=experimental,
    )
