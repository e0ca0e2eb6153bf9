"""Every valid FLAC converts: the corners of RFC 9639 that real files use,
each made with the real tools, each through every mode; bad and corrupt
sources fail alone, with their cause named, whatever path they take."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mutagen import id3
from mutagen.apev2 import APEv2
from mutagen.flac import FLAC

from flac2all.audio import decoding
from flac2all.audio.decoding import Decoder
from flac2all.audio.flacstream import crc8, crc16, frame_header
from flac2all.errors import TaskError
from flac2all.model import AudioInfo
from tests.conftest import (
    decodes,
    duration,
    make_flac,
    mutagen_file,
    read_log,
    run_flac2all,
    source_length,
    temp_files,
    write_extensible_wav,
)

MODES = "mp3,vorbis,opus,aac,flac,test,f:alac"


OUTPUTS = {
    "mp3": ("mp3", ".mp3"),
    "vorbis": ("vorbis", ".ogg"),
    "opus": ("opus", ".opus"),
    "aac": ("aac", ".m4a"),
    "flac": ("flac", ".flac"),
    "test": ("test", ".ana"),
    "f:alac": ("f_alac", ".m4a"),
}


RAW = ["--force-raw-format", "--endian=little", "--sign=signed"]


def sine(seconds: float, rate: int = 44100, channels: int = 2, bits: int = 16, tone: int = 440) -> bytes:
    """Raw little-endian signed PCM from sox: a tone with some noise."""
    return subprocess.run(
        ["sox", "-V1", "-n", "-t", "raw", "-r", str(rate), "-e", "signed", "-b", str(bits), "-c", str(channels), "-"]
        + ["synth", str(seconds), "sine", str(tone), "synth", "noise", "amod", "0.1"],
        capture_output=True,
        check=True,
    ).stdout


def flac_from_raw(pcm: bytes, out: Path, rate=44100, channels=2, bits=16, options=(), stream=False) -> Path:
    """flac encoding raw PCM; ``stream``: to a pipe, as a streaming encoder
    does (it cannot go back to write the total samples or the MD5)."""
    fmt = [*RAW, f"--channels={channels}", f"--bps={bits}", f"--sample-rate={rate}"]
    where = ["--stdout"] if stream else ["--output-name", str(out)]
    done = subprocess.run(
        ["flac", "--silent", "--force", *fmt, *options, *where, "-"], input=pcm, capture_output=True, check=True
    )
    if stream:
        out.write_bytes(done.stdout)
    return out


def first_frame(data: bytes) -> int:
    """Where the first frame starts: past 'fLaC' and every metadata block."""
    i = 4
    while True:
        last, size = data[i] & 0x80, int.from_bytes(data[i + 1 : i + 4], "big")
        i += 4 + size
        if last:
            return i


def coded_number(n: int) -> bytes:
    """A frame header's UTF-8-like coded sample number (RFC 9639 9.1.5)."""
    if n < 0x80:
        return bytes([n])
    extra = next(k for k in range(1, 7) if n < 1 << (5 * k + 6) or k == 6)
    lead = (0xFF << (7 - extra)) & 0xFF
    out = [lead | (n >> (6 * extra))]
    out += [0x80 | ((n >> (6 * k)) & 0x3F) for k in range(extra - 1, -1, -1)]
    return bytes(out)


def variable_blocksize(out: Path, sizes: list[int], rate=44100, channels=2) -> tuple[Path, bytes]:
    """A variable-block-size stream (libFLAC's encoder writes none): one
    single-frame FLAC per block, each frame renumbered by its first sample
    with the blocking strategy bit set, CRCs recomputed, under one STREAMINFO."""
    pcm = sine(sum(sizes) / rate, rate, channels)
    frame_bytes = channels * 2
    frames, at = [], 0
    for n in sizes:
        part = flac_from_raw(
            pcm[at * frame_bytes : (at + n) * frame_bytes], out, rate, channels, 16, [f"--blocksize={n}"]
        )
        data = part.read_bytes()
        frame = data[first_frame(data) :]
        length, _ = frame_header(frame, 0)
        number = 1 + (0 if frame[4] < 0x80 else 8 - (~frame[4] & 0xFF).bit_length() - 1)
        header = bytes([0xFF, 0xF9, frame[2], frame[3]]) + coded_number(at) + frame[4 + number : length - 1]
        header += bytes([crc8(header)])
        body = header + frame[length:-2]
        frames.append(body + crc16(body).to_bytes(2, "big"))
        at += n
    pcm = pcm[: at * frame_bytes]
    info = bytearray(34)
    info[0:2] = min(sizes[:-1]).to_bytes(2, "big")
    info[2:4] = max(sizes).to_bytes(2, "big")
    packed = rate << 44 | (channels - 1) << 41 | 15 << 36 | at
    info[10:18] = packed.to_bytes(8, "big")
    info[18:34] = hashlib.md5(pcm).digest()
    out.write_bytes(b"fLaC" + b"\x80\x00\x00\x22" + bytes(info) + b"".join(frames))
    return out, pcm


@dataclass
class Case:
    """A source, and what its outputs must be: length in seconds, flac
    mode's MD5 (hex), bit depth and sample rate, the status note."""

    length: float
    md5: str
    bits: int = 16
    rate: int = 44100
    channels: int = 2
    note: str = ""


def md5_of(pcm: bytes) -> str:
    return hashlib.md5(pcm).hexdigest()


def flac_md5(path: Path) -> str:
    return f"{FLAC(path).info.md5_signature:032x}"


def odd_depth(folder: Path, bits: int, streamed: bool = False) -> Case:
    """12, 15 or 20 bits in WAVE_FORMAT_EXTENSIBLE; 15 is outside the FLAC
    subset, so flac needs --lax to write it. ``streamed``: encoded from a
    pipe (as ``sox ... -t wav - | flac --ignore-chunk-sizes -``), so that
    neither the total nor the MD5 is known."""
    name = f"{bits}bit_streamed" if streamed else f"{bits}bit"
    wav = folder / f"{name}.wav"
    write_extensible_wav(wav, 44100, 2, 16 if bits <= 16 else 24, bits, 0.3)
    reference = folder / (f"{name}.reference" if streamed else f"{name}.flac")
    subprocess.run(["flac", "--silent", "--force", "--lax", "--output-name", str(reference), str(wav)], check=True)
    md5 = flac_md5(reference)
    if streamed:
        reference.unlink()
        pipe = ["flac", "--silent", "--lax", "--ignore-chunk-sizes", "--stdout", "-"]
        with open(wav, "rb") as audio, open(folder / f"{name}.flac", "wb") as out:
            subprocess.run(pipe, stdin=audio, stdout=out, stderr=subprocess.DEVNULL, check=True)
    wav.unlink()
    return Case(0.3, md5, bits)


def joined_frames(folder: Path, name: str, second: bytes, fmt: tuple[int, int, int]) -> bytes:
    """A stream encoded to a pipe whose audio changes format midway: the
    frames of a second stream (``fmt``: its rate, channels, bits) after the
    first."""
    rate, channels, bits = fmt
    other = flac_from_raw(second, folder / f"{name}.part", rate, channels, bits, stream=True)
    data = other.read_bytes()
    other.unlink()
    return data[first_frame(data) :]


Converted = tuple[dict[str, Case], Path, object]  # the cases, OUTDIR, the run


def folder(tmp_path_factory, name: str) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(name)
    (root / "in").mkdir()
    return root, root / "in"


def convert(root: Path, cases: dict[str, Case], flac_refuses: tuple[str, ...] = ()) -> Converted:
    """One run in every mode, once each source (but those flac refuses) is
    checked valid by the reference decoder itself."""
    for path in (root / "in").iterdir():
        if path.stem not in flac_refuses:
            subprocess.run(["flac", "--test", "--silent", str(path)], check=True, capture_output=True)
    out = root / "out"
    return cases, out, run_flac2all(MODES, "-o", out, root / "in")


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> Converted:
    """Streams of unusual parameters, converted by one run in every mode."""
    root, src = folder(tmp_path_factory, "formats")
    cases: dict[str, Case] = {}

    pcm = sine(0.5)
    flac_from_raw(pcm, src / "unknown_total.flac", stream=True)
    cases["unknown_total"] = Case(0.5, md5_of(pcm))

    pcm = sine(0.4)
    flac_from_raw(pcm, src / "no_md5.flac", options=["--no-md5-sum"])
    cases["no_md5"] = Case(0.4, md5_of(pcm))

    pcm = sine(0.3, bits=32)
    flac_from_raw(pcm, src / "32bit.flac", bits=32)
    cases["32bit"] = Case(0.3, md5_of(pcm), 32)

    pcm = sine(0.3, bits=32)
    flac_from_raw(pcm, src / "32bit_streamed.flac", bits=32, stream=True)
    cases["32bit_streamed"] = Case(0.3, md5_of(pcm), 32)

    for bits in (12, 15, 20):
        cases[f"{bits}bit"] = odd_depth(src, bits)

    for bits in (12, 20):  # the MD5 flac mode must match is then computed from the decoded PCM
        cases[f"{bits}bit_streamed"] = odd_depth(src, bits, streamed=True)

    pcm = sine(65535 * 1.5 / 44100)
    flac_from_raw(pcm, src / "blocksize_65535.flac", options=["--lax", "--blocksize=65535"])
    cases["blocksize_65535"] = Case(len(pcm) / 4 / 44100, md5_of(pcm))

    noise = subprocess.run(
        ["sox", "-V1", "-n", "-t", "raw", "-r", "44100", "-e", "signed", "-b", "16", "-c", "2", "-"]
        + ["synth", "0.75", "whitenoise"],
        capture_output=True,
        check=True,
    ).stdout
    rice = ["--lax", "--blocksize=32768", "--max-lpc-order=0", "--rice-partition-order=15,15"]
    flac_from_raw(noise, src / "rice_order_15.flac", options=rice)
    cases["rice_order_15"] = Case(len(noise) / 4 / 44100, md5_of(noise))

    _, pcm = variable_blocksize(src / "variable_blocksize.flac", [4096, 1000, 2500, 4608, 333, 1152])
    cases["variable_blocksize"] = Case(len(pcm) / 4 / 44100, md5_of(pcm))
    return convert(root, cases)


@pytest.fixture(scope="module")
def structures(tmp_path_factory) -> Converted:
    """Files of unusual structure, converted by one run in every mode."""
    root, src = folder(tmp_path_factory, "structures")
    cases: dict[str, Case] = {}

    first, second = sine(0.5), sine(0.4, rate=48000, tone=660)
    streamed = flac_from_raw(first, src / "rate_change.flac", stream=True)
    streamed.write_bytes(streamed.read_bytes() + joined_frames(src, "rate", second, (48000, 2, 16)))
    # Resampled, the flac mode's audio is no longer the source's: its MD5
    # is checked against what ffmpeg decoded, in the runner.
    note = "sample rate changes mid-stream: resampled to 44100 Hz"
    cases["rate_change"] = Case(0.9, "", note=note)

    first, second = sine(0.5), sine(0.4, channels=1, tone=660)
    streamed = flac_from_raw(first, src / "channel_change.flac", stream=True)
    streamed.write_bytes(streamed.read_bytes() + joined_frames(src, "channels", second, (44100, 1, 16)))
    cases["channel_change"] = Case(0.9, "", note="channel count changes mid-stream: mixed to 2 channels")

    # ffmpeg would drop the frames around each header between them.
    first = sine(0.3)
    a = flac_from_raw(first, root / "a.flac").read_bytes()
    b = flac_from_raw(sine(0.3, rate=48000, tone=660), root / "b.flac", rate=48000).read_bytes()
    (src / "cat_three_files.flac").write_bytes(a + a + b)
    note = "sample rate changes between FLAC files joined end to end: resampled to 44100 Hz"
    cases["cat_three_files"] = Case(0.9, "", note=note)
    (src / "cat_same_format.flac").write_bytes(a + a)
    cases["cat_same_format"] = Case(0.6, md5_of(first * 2), note="2 FLAC files joined end to end")

    pcm = sine(0.4)
    plain = flac_from_raw(pcm, root / "plain.flac")
    tagged = FLAC(plain)
    tagged["TITLE"] = "the FLAC's own title"
    tagged.save()
    body = plain.read_bytes()
    with_id3 = src / "id3v2_first.flac"
    with_id3.write_bytes(body)
    tag = id3.ID3()
    tag.add(id3.TIT2(encoding=3, text="the ID3 title"))
    tag.add(id3.TPE1(encoding=3, text=["Ripper Artist"]))
    tag.add(id3.TALB(encoding=3, text="Ripped Album"))
    tag.add(id3.TRCK(encoding=3, text="3/12"))
    tag.add(id3.APIC(encoding=3, mime="image/png", type=3, desc="", data=b"\x89PNG fake"))
    tag.save(with_id3)  # mutagen puts it before 'fLaC', as rippers do
    assert with_id3.read_bytes()[:3] == b"ID3"
    cases["id3v2_first"] = Case(0.4, md5_of(pcm), note="ID3v2 tag before the FLAC stream")

    (src / "junk_first.flac").write_bytes(b"\x00" * 3000 + b"RIFF? not really" * 40 + body)
    cases["junk_first"] = Case(0.4, md5_of(pcm), note="3640 bytes of something else before the FLAC stream")

    (src / "frames_only.flac").write_bytes(body[first_frame(body) :])
    cases["frames_only"] = Case(0.4, md5_of(pcm), note="no FLAC header")

    (src / "junk_then_frames.flac").write_bytes(b"garbage!" * 50 + body[first_frame(body) :])
    cases["junk_then_frames"] = Case(0.4, md5_of(pcm), note="400 bytes of something else")

    id3v1 = b"TAG" + b"Old Title".ljust(30, b"\0") + b"Old Artist".ljust(30, b"\0") + bytes(65)
    (src / "id3v1_last.flac").write_bytes(body + id3v1)
    cases["id3v1_last"] = Case(0.4, md5_of(pcm), note="ID3v1/APEv2 tag after the FLAC stream: skipped")
    ape = src / "apev2_and_id3v1_last.flac"
    ape.write_bytes(body)
    apev2 = APEv2()
    apev2["Title"] = "APE title"
    apev2.save(ape)
    ape.write_bytes(ape.read_bytes() + id3v1)
    cases["apev2_and_id3v1_last"] = Case(0.4, md5_of(pcm), note="ID3v1/APEv2 tag after the FLAC stream: skipped")

    flac_refuses = ("rate_change", "channel_change", "cat_three_files", "cat_same_format", "junk_first")
    return convert(root, cases, (*flac_refuses, "junk_then_frames", "id3v1_last", "apev2_and_id3v1_last"))


@pytest.mark.slow
@pytest.mark.parametrize("group", ["formats", "structures"])
def test_every_unusual_file_converts_in_every_mode(request, group):
    cases, out, run = request.getfixturevalue(group)
    rows = read_log(out)
    assert len(rows) == len(cases) * len(OUTPUTS), run.stdout + run.stderr
    failed = [
        (r["infile"], r["format"], r["conversion_status"])
        for r in rows
        if not r["conversion_status"].startswith("SUCCESS")
    ]
    assert failed == []
    assert run.returncode == 0, run.stdout + run.stderr


FORMATS = [
    "unknown_total",
    "no_md5",
    "32bit",
    "32bit_streamed",
    "12bit",
    "15bit",
    "20bit",
    "12bit_streamed",
    "20bit_streamed",
    "blocksize_65535",
    "rice_order_15",
    "variable_blocksize",
]


STRUCTURES = [
    "rate_change",
    "channel_change",
    "cat_three_files",
    "cat_same_format",
    "id3v2_first",
    "junk_first",
    "frames_only",
    "junk_then_frames",
    "id3v1_last",
    "apev2_and_id3v1_last",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS + STRUCTURES)
def test_each_output_is_whole_and_flac_mode_bit_exact(request, name):
    cases, out, _ = request.getfixturevalue("formats" if name in FORMATS else "structures")
    case = cases[name]
    rows = {r["format"]: r for r in read_log(out) if Path(r["infile"]).stem == name}
    assert set(rows) == set(OUTPUTS)
    for mode, (folder, ext) in OUTPUTS.items():
        assert case.note in rows[mode]["conversion_status"], rows[mode]
        output = out / folder / f"{name}{ext}"
        assert output.stat().st_size > 0
        if mode != "test":
            # mp3 and opus add their encoder delay and padding.
            assert mutagen_file(output).info.length == pytest.approx(case.length, abs=0.08), mode
    flac = FLAC(out / "flac" / f"{name}.flac")
    assert flac.info.bits_per_sample == case.bits
    assert flac.info.sample_rate == case.rate
    assert flac.info.channels == case.channels
    assert flac.info.total_samples == pytest.approx(case.length * case.rate, abs=1)
    if case.md5:
        assert f"{flac.info.md5_signature:032x}" == case.md5
    subprocess.run(["flac", "--test", "--silent", str(out / "flac" / f"{name}.flac")], check=True)


@pytest.mark.slow
def test_the_unusual_files_are_what_they_claim(formats, structures):
    """So that the tests above test something."""
    src = formats[1].parent / "in"
    assert FLAC(src / "unknown_total.flac").info.total_samples == 0
    assert FLAC(src / "unknown_total.flac").info.md5_signature == 0
    assert FLAC(src / "no_md5.flac").info.md5_signature == 0
    for bits in (12, 15, 20, 32):
        assert FLAC(src / f"{bits}bit.flac").info.bits_per_sample == bits
    for bits in (12, 20):
        streamed = FLAC(src / f"{bits}bit_streamed.flac").info
        assert (streamed.bits_per_sample, streamed.total_samples, streamed.md5_signature) == (bits, 0, 0)
    assert "partition_order=15" in analysis(src / "rice_order_15.flac")
    assert "blocksize=65535" in analysis(src / "blocksize_65535.flac")
    sizes = analysis(src / "variable_blocksize.flac")
    assert "blocksize=1000" in sizes and "blocksize=4608" in sizes
    for name in ("rate_change", "channel_change"):
        path = structures[1].parent / "in" / f"{name}.flac"
        assert "in frame but" in subprocess.run(["flac", "--test", str(path)], capture_output=True, text=True).stderr


def analysis(path: Path) -> str:
    """flac's analysis of each frame and subframe."""
    argv = ["flac", "--analyze", "--silent", "--stdout", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_the_id3v2_fields_fill_in_the_source_tags(structures):
    _, out, _ = structures
    ogg = mutagen_file(out / "vorbis" / "id3v2_first.ogg")
    assert ogg["TITLE"] == ["the FLAC's own title"]  # the FLAC's comment wins
    assert ogg["ARTIST"] == ["Ripper Artist"]
    assert ogg["ALBUM"] == ["Ripped Album"]
    assert ogg["TRACKNUMBER"] == ["3"] and ogg["TRACKTOTAL"] == ["12"]
    flac = FLAC(out / "flac" / "id3v2_first.flac")
    assert [p.data for p in flac.pictures] == [b"\x89PNG fake"]
    mp3 = mutagen_file(out / "mp3" / "id3v2_first.mp3")
    assert str(mp3.tags["TPE1"]) == "Ripper Artist"


DEPTHS = (8, 12, 16, 20, 24)
CHANNELS = (1, 2, 3, 6)
SHAPES = [(b, c, n, t) for b in DEPTHS for c in CHANNELS for n in (1000, 1001) for t in ("known", "unknown")]


def shape_name(bits: int, channels: int, frames: int, total: str) -> str:
    return f"b{bits}_c{channels}_n{frames}_{total}"


def extensible_wav(values: list[int], channels: int, bits: int, known: bool) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE file of these samples at 8 kHz (below the
    container's depth shifted up, 8-bit unsigned, as WAV has them); ``known``: its data
    chunk says its size (padded to an even one), else 0 (a pipe's)."""
    size = (bits + 7) // 8
    data = b"".join((v << (-bits % 8)).to_bytes(size, "little", signed=True) for v in values)
    if size == 1:  # 8-bit WAV is unsigned
        data = bytes(b ^ 0x80 for b in data)
    guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # PCM
    fmt = struct.pack(
        "<HHIIHHHHI", 0xFFFE, channels, 8000, 8000 * channels * size, channels * size, size * 8, 22, bits, 0
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt + guid)) + fmt + guid
    body += b"data" + struct.pack("<I", len(data) if known else 0) + data + b"\x00" * (len(data) % 2 * known)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture(scope="module")
def odd_sizes(tmp_path_factory) -> tuple[Path, dict[str, bytes], object]:
    """Tiny FLACs of every depth and channel count, of odd and even length,
    with and without the total samples in their STREAMINFO: a third of them
    decode to WAV data of odd size (padded by a byte that is not audio)."""
    root = tmp_path_factory.mktemp("odd_sizes")
    src = root / "in"
    src.mkdir()
    rng = random.Random(7)
    pcms = {}
    for bits, channels, frames, total in SHAPES:
        size, top = (bits + 7) // 8, 1 << (bits - 1)
        values = [rng.randrange(-top, top) for _ in range(frames * channels)]
        name = shape_name(*(bits, channels, frames, total))
        pcms[name] = b"".join(v.to_bytes(size, "little", signed=True) for v in values)
        wav = extensible_wav(values, channels, bits, known=total == "known")
        encode = ["flac", "--silent", "--force", "--channel-map=none", "--output-name", str(src / f"{name}.flac")]
        if total == "unknown":  # through a pipe: the total and MD5 stay 0
            encode = ["flac", "--silent", "--ignore-chunk-sizes", "--channel-map=none", "--stdout"]
        done = subprocess.run([*encode, "-"], input=wav, capture_output=True, check=True)
        if total == "unknown":
            (src / f"{name}.flac").write_bytes(done.stdout)
    out = root / "out"
    return out, pcms, run_flac2all("flac", "-o", out, src)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: shape_name(*s))
def test_flac_mode_is_bit_exact_whatever_the_size_of_the_wav_data(odd_sizes, shape):
    out, pcms, run = odd_sizes
    bits, channels, frames, _ = shape
    name = shape_name(*shape)
    status = {Path(r["infile"]).stem: r["conversion_status"] for r in read_log(out)}
    assert status[name] == "SUCCESS", status[name]
    output = out / "flac" / f"{name}.flac"
    info = FLAC(output).info
    assert (info.bits_per_sample, info.channels, info.total_samples) == (bits, channels, frames)
    # flac's MD5 is of the samples in whole bytes, as they were made; its
    # own full decode checks the frames against it.
    assert info.md5_signature == int(hashlib.md5(pcms[name]).hexdigest(), 16)
    subprocess.run(["flac", "--test", "--silent", str(output)], check=True)


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> tuple[Path, object]:
    """Corruptions on each of the new paths: they still fail."""
    root = tmp_path_factory.mktemp("corrupt")
    src = root / "in"
    src.mkdir()
    pcm = sine(1.0)
    streamed = flac_from_raw(pcm, root / "streamed.flac", stream=True).read_bytes()
    mid = len(streamed) // 2
    flipped = bytearray(streamed)
    flipped[mid] ^= 0x01
    (src / "crc_error_unknown_total.flac").write_bytes(bytes(flipped))
    (src / "truncated_last_frame_unknown_total.flac").write_bytes(streamed[:-5])
    changed = streamed + joined_frames(root, "change", sine(0.6, rate=48000), (48000, 2, 16))
    flipped = bytearray(changed)
    # In the last frames: flac stops at the change (its first frame decodes),
    # ffmpeg reads on and must see it.
    flipped[len(changed) - 3000] ^= 0x01
    (src / "crc_error_after_rate_change.flac").write_bytes(bytes(flipped))
    (src / "crc_error_before_rate_change.flac").write_bytes(
        bytes(flipped[:mid]) + bytes([changed[mid] ^ 1]) + changed[mid + 1 :]
    )
    (src / "truncated_after_rate_change.flac").write_bytes(changed[:-5])
    frames = streamed[first_frame(streamed) :]
    (src / "truncated_frames_only.flac").write_bytes(frames[:-5])
    flipped = bytearray(frames)
    flipped[len(frames) // 2] ^= 0x01
    (src / "crc_error_frames_only.flac").write_bytes(bytes(flipped))
    good = flac_from_raw(pcm, root / "good.flac").read_bytes()
    badmd5 = bytearray(good)
    badmd5[26] ^= 0xFF
    tag = id3.ID3()
    tag.add(id3.TIT2(encoding=3, text="x"))
    (src / "md5_mismatch_id3v2_first.flac").write_bytes(bytes(badmd5))
    tag.save(src / "md5_mismatch_id3v2_first.flac")
    (src / "md5_mismatch_junk_first.flac").write_bytes(b"\x00" * 100 + bytes(badmd5))
    (src / "text_with_id3v2.flac").write_text("just some text, no audio at all\n" * 20)
    tag.save(src / "text_with_id3v2.flac")
    id3v1 = b"TAG" + bytes(125)
    (src / "truncated_then_id3v1.flac").write_bytes(good[:-5] + id3v1)
    (src / "md5_mismatch_then_id3v1.flac").write_bytes(bytes(badmd5) + id3v1)
    (src / "bits_change.flac").write_bytes(streamed + joined_frames(root, "bits", sine(0.5, bits=24), (44100, 2, 24)))
    out = root / "out"
    return out, run_flac2all(MODES, "-o", out, src)


CORRUPT = {
    "crc_error_unknown_total": "flac exited with status 1",
    "truncated_last_frame_unknown_total": "flac exited with status 1",
    "crc_error_after_rate_change": "ffmpeg exited with status 69",
    "crc_error_before_rate_change": "flac exited with status 1",
    "truncated_after_rate_change": "ffmpeg exited with status 69",
    "truncated_frames_only": "ffmpeg exited with status 69",
    "crc_error_frames_only": "ffmpeg exited with status 69",
    "md5_mismatch_id3v2_first": "MD5 signature mismatch",
    "md5_mismatch_junk_first": "MD5 signature mismatch",
    "text_with_id3v2": "not a FLAC file (no fLaC header)",
    "bits_change": "bit depth changes mid-stream (16 bits, then 24)",
    "truncated_then_id3v1": "flac exited with status 1",
    "md5_mismatch_then_id3v1": "MD5 signature mismatch",
}


@pytest.mark.slow
def test_corrupt_files_still_fail_with_their_cause(corrupt):
    out, run = corrupt
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == len(CORRUPT) * len(OUTPUTS)
    for row in rows:
        name = Path(row["infile"]).stem
        assert row["conversion_status"].startswith("ERROR"), row
        assert CORRUPT[name] in row["conversion_status"], row
        assert not Path(row["outfile"]).exists(), row


def flac_failure(said: str) -> TaskError:
    failure = TaskError("flac exited with status 1: x.flac: ERROR while decoding data")
    failure.stderr = said
    return failure


def test_only_flacs_words_for_a_structure_bring_ffmpeg_in(tmp_path):
    info = AudioInfo(44100, 2, 16, 0.5)
    flac = Decoder(tmp_path / "x.flac")
    rate = decoding.fallback(
        [flac_failure("x.flac: ERROR, sample rate is 48000 in frame but 44100 in STREAMINFO")], flac, info
    )
    assert isinstance(rate, Decoder) and rate.target == info
    assert rate.command()[0] == "ffmpeg" and "crccheck+bitstream+buffer+explode" in rate.command()
    bits = decoding.fallback([flac_failure("ERROR, bits-per-sample is 24 in frame but 16 in STREAMINFO")], flac, info)
    assert isinstance(bits, TaskError) and "bit depth changes mid-stream" in bits.message
    crc = "x.flac: *** Got error code 2:FLAC__STREAM_DECODER_ERROR_STATUS_FRAME_CRC_MISMATCH"
    assert decoding.fallback([flac_failure(crc)], flac, info) is None
    assert decoding.fallback([flac_failure("ERROR, MD5 signature mismatch")], flac, info) is None
    (tmp_path / "x.flac").write_bytes(b"fLaC" + b"\0" * 100)  # lost sync, but no second FLAC header
    assert decoding.fallback([flac_failure("FLAC__STREAM_DECODER_ERROR_STATUS_LOST_SYNC")], flac, info) is None
    encoder = TaskError("lame exited with status 1: sample rate is 48000 in frame but 44100 in STREAMINFO")
    encoder.stderr = "ERROR, sample rate is 48000 in frame but 44100 in STREAMINFO"
    assert decoding.fallback([encoder], flac, info) is None
    assert decoding.fallback([flac_failure("ERROR, channels is 1 in frame but 2 in STREAMINFO")], rate, info) is None


def test_an_output_of_a_converted_stream_can_be_retagged(tmp_path):
    """Its source's STREAMINFO describes the first file only: a retag checks
    that the tagged output keeps its own audio, not the STREAMINFO's."""
    src = tmp_path / "in"
    src.mkdir()
    a = flac_from_raw(sine(0.3), tmp_path / "a.flac")
    b = flac_from_raw(sine(0.3, rate=48000), tmp_path / "b.flac", rate=48000)
    joined = src / "joined.flac"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    out = tmp_path / "out"
    assert run_flac2all("mp3,flac", "-o", out, src).returncode == 0
    tags = FLAC(joined)
    tags["TITLE"] = "retitled"
    tags.save()
    again = run_flac2all("mp3,flac", "-o", out, src)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["conversion_status"] for r in again.rows()} == {"SUCCESS (retagged)"}
    assert FLAC(out / "flac" / "joined.flac")["TITLE"] == ["retitled"]
    assert mutagen_file(out / "mp3" / "joined.mp3").info.length == pytest.approx(0.6, abs=0.08)


@pytest.fixture
def bad_library(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    good = make_flac(root / "good.flac", seconds=0.5)
    long = make_flac(tmp_path / "long.flac", seconds=2)
    data = long.read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 300):
        corrupt[i] ^= 0x55
    (root / "corrupt.flac").write_bytes(bytes(corrupt))
    badmd5 = bytearray(good.read_bytes())
    badmd5[26] ^= 0xFF  # STREAMINFO's MD5: frames fine, audio "wrong"
    (root / "badmd5.flac").write_bytes(bytes(badmd5))
    (root / "text.flac").write_text("this is not audio\n")
    (root / "empty.flac").write_bytes(b"")
    (root / "dangling.flac").symlink_to(tmp_path / "nowhere.flac")
    return root


EXPECTED_CAUSES = {
    "truncated.flac": "flac exited with status 1",
    "corrupt.flac": "flac exited with status 1",
    "badmd5.flac": "MD5 signature mismatch",
    "text.flac": "not a FLAC file",
    "empty.flac": "not a FLAC file",
    "dangling.flac": "No such file or directory",
}


@pytest.mark.slow
def test_bad_sources_fail_alone_with_their_cause(bad_library, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus,flac,test", "-o", out, bad_library)
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == 4 * 7
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(Path(row["infile"]).name, []).append(row)
    for row in by_file["good.flac"]:
        assert row["conversion_status"] == "SUCCESS"
    for name, cause in EXPECTED_CAUSES.items():
        for row in by_file[name]:
            assert row["conversion_status"].startswith("ERROR"), row
            assert cause in row["conversion_status"], row
            assert row["return_code"] != "0"
            assert not Path(row["outfile"]).exists(), row  # nothing under a final name
    # The good file's outputs are whole.
    for ext, folder in ((".mp3", "mp3"), (".opus", "opus"), (".flac", "flac")):
        output = out / folder / f"good{ext}"
        assert decodes(output)
        assert duration(output) == pytest.approx(source_length(bad_library / "good.flac"), abs=0.08)
    assert temp_files(out) == []
    assert "truncated.flac" in run.stdout  # named in the summary, too


def test_unreadable_file_is_a_failed_task(tmp_path):
    root = tmp_path / "in"
    make_flac(root / "ok.flac")
    secret = make_flac(root / "secret.flac")
    secret.chmod(0o000)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "flac2all", "opus", "-o", str(out), str(root)]
    if os.geteuid() == 0:
        # Root reads any file: drop the capabilities that let it.
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {Path(r["infile"]).name: r for r in read_log(out)}
    assert rows["ok.flac"]["conversion_status"] == "SUCCESS"
    assert rows["secret.flac"]["conversion_status"] == "ERROR: cannot read source: Permission denied"
