"""What a tag family is: how one kind of output file carries tags.

One small class per family, in the style of MusicBrainz Picard's formats:
its name, the mutagen types its files open as, how the source's metadata is
written into it, and where its provenance tag lives. Nothing outside
``flac2all.tags`` and ``flac2all.codecs`` branches on a family; they ask it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import mutagen

from flac2all.errors import TaskError
from flac2all.model import Settings
from flac2all.tags import art
from flac2all.tags.source import SourceMeta, parse_provenance


class Tagged(NamedTuple):
    """Tags written: the warnings, and the file as mutagen parsed it, the
    new tags in it, where the writing read back what it wrote (None: the
    file must be read anew to be checked)."""

    warnings: list[str]
    audio: mutagen.FileType | None


class TagFamily:
    """A family of outputs that carry no tags (raw streams, WAV...); the
    base of those that do."""

    name = "none"
    # The mutagen types an output of the family can be: opening it with
    # those alone skips mutagen's sniffing of every format it knows (most of
    # the cost of opening a short file). Empty: any type, and no tags.
    types: tuple[type[mutagen.FileType], ...] = ()

    @property
    def carries_tags(self) -> bool:
        return bool(self.types)

    def __repr__(self) -> str:
        return f"<tag family {self.name}>"

    def load(self, path: Path) -> mutagen.FileType | None:
        """``path`` opened as one of the family's types (any type for a
        family without tags); None if it is not one."""
        return mutagen.File(path, options=list(self.types) or None)

    def opened(self, path: Path, audio: mutagen.FileType | None = None) -> mutagen.FileType:
        """``audio`` if it is ``path`` already opened as one of the family's
        types (an output parsed once for its checks and its tags), else
        ``path`` opened anew."""
        if audio is not None and isinstance(audio, self.types):
            return audio
        opened = self.load(path)
        if opened is None:
            kinds = " or ".join(t.__name__ for t in self.types)
            raise TaskError(f"the output is not a file mutagen can read as {kinds}")
        return opened

    def shaped_by(self, settings: Settings) -> bool:
        """Whether the run's tag options change this family's tags (a part
        of each output's settings hash)."""
        return False

    def write(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> list[str]:
        """Replace the tags of ``path`` (``audio``: as already opened, see
        ``opened``) with the source's; return warnings (for example a
        picture the format cannot hold)."""
        return []

    def provenance_values(self, tags: Any) -> list[str]:
        """The FLAC2ALL_SOURCE values in a file's tags."""
        return []

    def written(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> Tagged:
        """``write``, and the file as it is now where the writing read it
        back (None: read it anew to check it); by default never."""
        return Tagged(self.write(path, meta, settings, audio), None)

    def write_tags(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> list[str]:
        """``write``, with mutagen's errors as the task's error; the
        pictures scaled down first with --art-max-size."""
        return self.tag(path, meta, settings, audio).warnings

    def tag(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> Tagged:
        """``write_tags``, with the file as it is now where the writing
        read it back (``written``)."""
        unscaled: list[str] = []
        if settings.art_max_size is not None and meta.pictures:
            pictures, unscaled = art.scaled_pictures(meta.pictures, settings.art_max_size)
            meta = replace(meta, pictures=pictures)
        try:
            warnings, now = self.written(path, meta, settings, audio)
        except mutagen.MutagenError as exc:
            raise TaskError(f"cannot write tags: {exc}") from None
        return Tagged(unscaled + warnings, now)

    def read_provenance(self, path: Path) -> dict[str, str] | None:
        """The fields of an output's FLAC2ALL_SOURCE tag, or None."""
        try:
            audio = self.load(path)
        except (mutagen.MutagenError, OSError):
            return None
        tags = getattr(audio, "tags", None)
        return None if tags is None else parse_provenance(self.provenance_values(tags))


NONE = TagFamily()
