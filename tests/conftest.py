"""Fixtures: tiny FLAC files made with the real tools, and a way to run the
real ``flac2all`` command.

Nothing here mocks an encoder: a failing or slow encoder is a tiny real
executable put first on PATH (see ``fake_bin``).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mutagen
import pytest
from mutagen.flac import FLAC, Picture

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("flac", "metaflac", "lame", "oggenc", "opusenc", "ffmpeg", "ffprobe", "sox")


def require(*programs: str) -> None:
    """Skip when a tool is missing; under CI=true a missing tool is a failure."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(autouse=True, scope="session")
def _tools() -> None:
    require(*TOOLS)


def write_extensible_wav(path: Path, rate: int, channels: int, container: int, valid: int, seconds: float) -> None:
    """A WAVE_FORMAT_EXTENSIBLE file with ``valid`` bits in ``container``-bit
    samples: the only way to hand flac a 12- or 20-bit source."""
    n = int(rate * seconds)
    frames = bytearray()
    for i in range(n):
        v = int(0.5 * math.sin(2 * math.pi * 440 * i / rate) * (2 ** (valid - 1) - 1)) << (container - valid)
        frames += v.to_bytes(container // 8, "little", signed=True) * channels
    guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # PCM
    mask = (1 << channels) - 1
    fmt = (
        struct.pack(
            "<HHIIHHHHI",
            0xFFFE,
            channels,
            rate,
            rate * channels * container // 8,
            channels * container // 8,
            container,
            22,
            valid,
            mask,
        )
        + guid
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def make_flac(
    path: Path,
    seconds: float = 0.3,
    rate: int = 44100,
    bits: int = 16,
    channels: int = 2,
    tags: dict[str, list[str] | str] | None = None,
    pictures: list[Picture] | None = None,
) -> Path:
    """Generate a real FLAC (sine + noise) with sox, or flac for odd depths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits in (8, 16, 24):
        subprocess.run(
            [
                "sox",
                "-V1",
                "-n",
                "-r",
                str(rate),
                "-b",
                str(bits),
                "-c",
                str(channels),
                str(path),
                "synth",
                str(seconds),
                "sine",
                "440",
                "synth",
                "noise",
                "amod",
                "0.1",
            ],
            check=True,
        )
    else:
        container = 16 if bits <= 16 else 24
        wav = path.with_name(path.name + ".wav")
        write_extensible_wav(wav, rate, channels, container, bits, seconds)
        subprocess.run(["flac", "-s", "-f", "-o", str(path), str(wav)], check=True)
        wav.unlink()
    f = FLAC(path)
    if f.tags is not None:
        f.tags.clear()  # sox's own "Processed by SoX" comment: the tags are the caller's
    for key, value in (tags or {}).items():
        f[key] = value if isinstance(value, list) else [value]
    for pic in pictures or []:
        f.add_picture(pic)
    f.save()
    return path


BASIC_TAGS = {
    "TITLE": "Title, with: colon = equals",
    "ARTIST": ["Artist One", "Artist Two"],
    "ALBUM": "Ålbum ☃",
    "DATE": "2021-03-04",
    "GENRE": ["Rock", "Jazz"],
    "TRACKNUMBER": "3",
    "TRACKTOTAL": "12",
}


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A small input tree: two tagged albums."""
    root = tmp_path / "music"
    make_flac(root / "Album A" / "01 one.flac", tags=BASIC_TAGS)
    make_flac(root / "Album A" / "02 two.flac", seconds=0.4, tags={**BASIC_TAGS, "TITLE": "Two", "TRACKNUMBER": "4"})
    make_flac(root / "Album B" / "03 three.flac", seconds=0.2, tags={"TITLE": "Three"})
    return root


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    outdir: Path

    def rows(self) -> list[dict[str, str]]:
        return read_log(self.outdir)


def read_log(outdir: Path) -> list[dict[str, str]]:
    """The CSV log, parsed by the csv module (fails if it is not CSV)."""
    with open(outdir / "conversion_results.log", newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    # The original's six columns first, then the host that ran the task.
    assert header == ["infile", "outfile", "format", "conversion_status", "return_code", "execution_time", "host"]
    assert all(len(r) == 7 for r in body)
    return [dict(zip(header, r, strict=True)) for r in body]


def status_by_name(outdir: Path) -> dict[str, str]:
    """Each logged source's file name -> its conversion status (one mode)."""
    return {Path(r["infile"]).name: r["conversion_status"] for r in read_log(outdir)}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own temporary folder and home, and so does
    every process it starts: nothing a test or a fake encoder writes by
    mistake lands in the repository or the user's home."""
    monkeypatch.chdir(tmp_path)
    # Nor in the user's home (cluster keys are looked for and made there);
    # pip keeps its cache, so that install tests do not download it all again.
    home = Path.home()
    monkeypatch.setenv("PIP_CACHE_DIR", os.environ.get("PIP_CACHE_DIR", str(home / ".cache" / "pip")))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))


def run_flac2all(*args: str | Path, path_prefix: Path | None = None, timeout: float = 120, **kw) -> Run:
    """Run the real command (``python -m flac2all``) and wait for it."""
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    argv = [sys.executable, "-m", "flac2all", *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=kw.get("cwd"))
    outdir = Path(args[args.index("-o") + 1]) if "-o" in args else Path(kw.get("cwd") or ".")
    return Run(proc.returncode, proc.stdout, proc.stderr, outdir)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``tmpfs(kib, folder=None)`` -> a freshly mounted tmpfs of that size
    (needs root, as CI has: there a failure to mount fails the test), unmounted
    after the test."""
    mounts: list[Path] = []

    def mount(kib: int = 16 * 1024, folder: Path | None = None) -> Path:
        folder = folder or tmp_path / f"tmpfs{len(mounts)}"
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True)
        if proc.returncode != 0:
            if os.environ.get("CI") == "true" and os.geteuid() == 0:
                pytest.fail(f"cannot mount a tmpfs: {proc.stderr!r}")
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in reversed(mounts):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def fake_bin(tmp_path: Path):
    """Make tiny real executables: ``fake_bin("lame", script)`` -> folder to
    put first on PATH."""
    folder = tmp_path / "fakebin"
    folder.mkdir()

    def make(name: str, body: str) -> Path:
        exe = folder / name
        real = shutil.which(name)
        # Version probes (flac2all records encoder versions) and the option
        # check before a run (preflight, in a flac2all-probe-* folder) reach
        # the real one: a fake stands in for the encodes only.
        passthrough = (
            f'case "$1" in --version|-version) exec {real} "$@";; esac\n'
            f'case "$*" in *flac2all-probe-*) exec {real} "$@";; esac\n'
            if real
            else ""
        )
        exe.write_text("#!/bin/bash\n" + passthrough + body)
        exe.chmod(0o755)
        return folder

    return make


SPIED = ("flac", "lame", "opusenc", "ffmpeg")


@pytest.fixture
def spy(tmp_path: Path, fake_bin) -> tuple[Path, Path]:
    """Encoders that log every start (version probes and the option check
    excepted) and then run: (folder to put first on PATH, the log)."""
    log = tmp_path / "started"
    log.touch()
    folder = tmp_path
    for program in SPIED:
        folder = fake_bin(program, f'echo "{program} $*" >> {log}\nexec {shutil.which(program)} "$@"\n')
    return folder, log


def duration(path: Path) -> float:
    """Duration as ffprobe reads it from the file itself."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return float(out)


def decodes(path: Path) -> bool:
    """True when ffmpeg decodes the whole file without a single error."""
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0 and not proc.stderr.strip()


def stream(path: Path) -> dict[str, str]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=sample_rate,channels,codec_name",
            "-of",
            "default=nw=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.split())


def audio_bytes(path: Path) -> bytes:
    """The encoded audio packets of a file, whatever the tags around them."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy", "-f", "data", "-"],
        capture_output=True,
        check=True,
    ).stdout


def source_length(path: Path) -> float:
    return FLAC(path).info.length


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".flac2all-tmp-*")]


def mutagen_file(path: Path):
    return mutagen.File(path)
