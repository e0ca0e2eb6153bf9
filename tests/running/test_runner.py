"""The per-source path of the runner: every output checked after its
encode and again once tagged, each Ogg output parsed by mutagen once."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from flac2all.model import Action, Settings, Status, Task
from flac2all.running.procs import ProcessGroup
from flac2all.running.runner import execute_batch
from flac2all.tags.family import TagFamily
from tests.conftest import decodes, duration, make_flac
from tests.tags.test_ogg import pages_valid, picture

OUTPUTS = {"opus": ("opus", OggOpus), "vorbis": ("ogg", OggVorbis)}


def encode_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **source) -> tuple[list, list[Path], list[Path]]:
    """opus and vorbis of one source through execute_batch; the outputs
    and every file mutagen was asked to open as an output."""
    src = make_flac(tmp_path / "in" / "a.flac", seconds=1.0, tags={"TITLE": "t", "ARTIST": ["a", "b"]}, **source)
    out = tmp_path / "out"
    settings = Settings(tmp_path / "in", out, tuple(OUTPUTS), threads=1)
    tasks = tuple(
        Task(src, mode, out / mode / f"a.{ext}", Action.ENCODE, src.stat().st_size)
        for mode, (ext, _) in OUTPUTS.items()
    )
    opened: list[Path] = []
    load = TagFamily.load

    def counted(self, path):
        opened.append(Path(path))
        return load(self, path)

    monkeypatch.setattr(TagFamily, "load", counted)
    results = execute_batch(tasks, settings, ProcessGroup())
    return results, [t.output for t in tasks], opened


def test_each_ogg_output_is_parsed_once_its_tags_read_back(tmp_path, monkeypatch):
    results, outputs, opened = encode_both(tmp_path, monkeypatch)
    assert [r.status for r in results] == [Status.SUCCESS] * 2, [r.status_text for r in results]
    assert len(opened) == len(outputs)  # the check after tagging reads back what the writing wrote
    for output, (_, kind) in zip(outputs, OUTPUTS.values(), strict=True):
        assert decodes(output)
        assert abs(duration(output) - 1.0) < 0.1
        tags = kind(output).tags
        assert tags["TITLE"] == ["t"] and tags["ARTIST"] == ["a", "b"]


def test_an_ogg_output_whose_header_pages_grew_is_parsed_again(tmp_path, monkeypatch):
    """A picture makes more header pages than the encoder wrote: the audio
    pages are renumbered, so the check after tagging reads the file anew."""
    results, outputs, opened = encode_both(tmp_path, monkeypatch, pictures=[picture(3, 300_000, 1)])
    assert [r.status for r in results] == [Status.SUCCESS] * 2, [r.status_text for r in results]
    assert len(opened) == 2 * len(outputs)
    for output in outputs:
        pages_valid(output)  # (ffmpeg's own words on the blob of a picture aside)
        assert abs(duration(output) - 1.0) < 0.1
