"""A device library (long and accented names, lossy files, big covers) and a run of it under the FAT32 profile."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from mutagen.flac import Picture
from PIL import Image

from tests.conftest import run_flac2all

BIG = 3000


def jpeg(width: int, height: int) -> bytes:
    """A real JPEG (a gradient: small, quick to make)."""
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def front_cover(data: bytes) -> Picture:
    pic = Picture()
    pic.type, pic.mime, pic.desc, pic.data = 3, "image/jpeg", "", data
    return pic


def lossy_files(folder: Path, tmp_path: Path) -> None:
    """bought.mp3 (lame, 320 kbit/s) and store.m4a (ffmpeg's aac), tagged."""
    wav = tmp_path / "tone.wav"
    subprocess.run(["sox", "-V1", "-n", "-r", "44100", "-c", "2", str(wav), "synth", "0.3", "sine", "440"], check=True)
    mp3 = ["lame", "--quiet", "-b", "320", "--tt", "Bought mp3", str(wav), str(folder / "bought.mp3")]
    subprocess.run(mp3, check=True)
    m4a = ["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "96k", "-metadata", "title=Bought m4a"]
    subprocess.run([*m4a, str(folder / "store.m4a")], check=True)


LONG = "x" * 245  # with ".flac": 250 bytes; its output names need cutting once numbered or in a deep folder


ACCENTS = "é" * 120  # 240 bytes, 120 UTF-16 units


def run(lib: Path, out: Path, spy, *args: str):
    folder, log = spy
    log.write_text("")
    result = run_flac2all("mp3,opus", "-o", out, *args, lib, path_prefix=folder)
    return result, log.read_text().splitlines()
