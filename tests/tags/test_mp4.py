"""MP4 freeform atoms rendered in linear time, byte for byte as mutagen does."""

from __future__ import annotations

from mutagen.mp4 import AtomDataType, MP4FreeForm, MP4Tags

from flac2all.tags.mp4 import FreeformTags


def test_freeform_atoms_render_as_mutagen_renders_them():
    values = [MP4FreeForm("Ünïcode".encode()), MP4FreeForm(b"\x00\x01", AtomDataType.IMPLICIT), b"plain"]
    for key, value in (
        ("----:com.apple.iTunes:NOTE", values),
        ("----:com.apple.iTunes:One", MP4FreeForm(b"one")),
        ("\xa9nam", ["title"]),
    ):
        assert FreeformTags()._render(key, value) == MP4Tags()._render(key, value)
