"""Outputs made from sources that are not FLAC (Action.CONVERT): a lossy
file re-encoded into a mode (--lossy convert, --max-bitrate), a folder's
cover scaled down (--art-max-size).

A lossy file is decoded by ffmpeg to WAV and piped into the mode's own
encoder stage (``Codec.encode_command``, as a FLAC's decoder would feed it);
its tags and pictures are read with mutagen (``tags.lossy``) and written by
the mode's tag family. Outputs are staged and committed as every output is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import mutagen

from flac2all import codecs, tags
from flac2all.errors import TaskError, describe_oserror
from flac2all.model import Settings, SourceFacts, Task
from flac2all.planning.discovery import lossy_format
from flac2all.running.outputs import commit, staged
from flac2all.running.pipeline import run_pipeline
from flac2all.running.procs import ProcessGroup
from flac2all.tags import art
from flac2all.tags.lossy import read_lossy
from flac2all.tags.source import read_regular

if TYPE_CHECKING:  # runner imports this module: its alias for type checkers only
    from flac2all.running.runner import Done

MAX_COVER = 64 * 1024 * 1024


def derive(task: Task, settings: Settings, processes: ProcessGroup) -> Done:
    """The output of a source that is not FLAC: a lossy file transcoded, or
    a cover scaled."""
    if lossy_format(task.source) is not None:
        return transcode(task, settings, processes)
    return scale_cover(task, settings)


def decode_command(task: Task, channels: int | None, rate: int | None) -> list[str]:
    """ffmpeg decoding the first audio stream of any file to WAV on stdout."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", "file:" + os.fspath(task.source)]
    argv += ["-map", "0:a:0", "-map_metadata", "-1"]
    if channels is not None:
        argv += ["-ac", str(channels)]
    if rate is not None:
        argv += ["-ar", str(rate)]
    return [*argv, "-c:a", "pcm_s16le", "-f", "wav", "pipe:1"]


def transcode(task: Task, settings: Settings, processes: ProcessGroup) -> Done:
    codec = codecs.resolve(task.mode)
    meta, facts = read_lossy(task.source)
    length = meta.info.length
    timeout = settings.timeout if settings.timeout is not None else 120.0 + 4.0 * length
    channels, rate = codec.adaptation(meta.info)
    with staged(task.output, settings.outdir) as tmp:
        stages = [decode_command(task, channels, rate), codec.encode_command(tmp, codec.options_in(settings))]
        run_pipeline(stages, timeout, processes)
        check_length(codec, tmp, length)
        meta = tags.with_provenance(meta, facts, task.settings_hash)
        warnings = codec.tag_family.write_tags(tmp, meta, settings)
        commit(tmp, task.output)
    return "; ".join(["converted", *warnings]), facts


def check_length(codec: codecs.Codec, tmp, length: float) -> None:
    """Refuse an empty output, or one much shorter or longer than its
    source (a lossy file's length is an estimate: a wider margin than a
    FLAC's)."""
    try:
        if tmp.stat().st_size == 0:
            raise TaskError("encoder wrote an empty file")
        out = codec.tag_family.load(tmp)
    except FileNotFoundError:
        raise TaskError("encoder wrote no output file") from None
    except mutagen.MutagenError as exc:
        raise TaskError(f"encoder output is unreadable: {exc}") from None
    got = getattr(getattr(out, "info", None), "length", None)
    if got and abs(got - length) > 0.5 + 0.02 * length:
        raise TaskError(f"output lasts {got:.2f} s but the source {length:.2f} s")


def scale_cover(task: Task, settings: Settings) -> Done:
    """A cover file, scaled down in its own format; kept byte for byte
    when it is small enough (or not an image Pillow can read)."""
    try:
        st = os.stat(task.source)
    except OSError as exc:
        raise TaskError(f"cannot read: {describe_oserror(exc)}") from None
    data = read_regular(task.source, MAX_COVER)
    if data is None:
        raise TaskError("cannot read the cover (not a regular file, or larger than 64 MiB)")
    small = art.scaled(data, settings.art_max_size or 0, keep_format=True) if settings.art_max_size else None
    with staged(task.output, settings.outdir, made=True) as tmp:
        try:
            with open(tmp.stage.fd, "wb", closefd=False) as f:
                f.write(small.data if small else data)
            os.utime(tmp.stage.fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            raise TaskError(f"cannot write: {describe_oserror(exc)}") from None
        commit(tmp, task.output)
    note = f"scaled to {small.width}x{small.height}" if small else "copied (small enough)"
    return note, SourceFacts(st.st_size, st.st_mtime_ns, "", "", "")
