"""The loudness meter against loudgain (libebur128) and ffmpeg's ebur128
filter, on tiny FLACs made with sox and decoded by the real flac, and its
album histogram against gating every block exactly."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flac2all.audio.cmeter import CMeter, kernel
from flac2all.audio.filters import channel_weights, k_weighting, oversampling
from flac2all.audio.loudness import BINS, Loudness, Meter, album
from flac2all.audio.npmeter import NumpyMeter, public_section_filter
from flac2all.audio.pcm import parse_header
from tests.conftest import require

np = pytest.importorskip("numpy")
signal = pytest.importorskip("scipy.signal")


def synth(path: Path, rate: int, bits: int, channels: int, *effects: str) -> Path:
    """A FLAC made by sox, without dither: ``effects`` follow ``synth``'s length.
    Repeatable (-R: its noise seeded): on noise drawn afresh each time,
    ffmpeg's true peak (every rate oversampled to 192 kHz by its resampler)
    differs from libebur128's and the meter's (4 times, a 49-tap
    interpolator) by up to 0.5 dB where one sharp peak stands out, while
    loudgain and the meter agree within 0.01 dB."""
    subprocess.run(
        ["sox", "-R", "-D", "-n", "-r", str(rate), "-b", str(bits), "-c", str(channels), str(path), "synth", *effects],
        check=True,
        capture_output=True,
    )
    return path


def decoded(path: Path) -> tuple[int, int, int, bytes]:
    """(rate, channels, bytes a sample, sample bytes) of the WAV flac decodes ``path`` to."""
    wav = subprocess.run(["flac", "-dcs", str(path)], check=True, capture_output=True).stdout
    parsed = parse_header(wav)
    assert parsed is not None
    fmt, start, size = parsed
    return fmt.rate, fmt.channels, fmt.container, wav[start : start + size if size else None]


def engines() -> list:
    """The meters' engines to test: the C loop (a failure under CI=true
    where it was not built, else left out) and numpy and scipy; the C loop
    also as it runs on a processor without AVX2."""
    if kernel() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the C loop (flac2all/audio/_meter.c) was not built")
        return [NumpyMeter]
    return [CMeter, Portable, NumpyMeter]


class Portable(CMeter):
    def __init__(self, *args) -> None:
        super().__init__(*args, wide=False)


def fed(meter: Meter, data: bytes, chunk: int) -> Loudness:
    for i in range(0, len(data), chunk):
        meter(data[i : i + chunk])
    return meter.result()


def agreeing(results: list[Loudness]) -> Loudness:
    """The first of ``results``, after checking that the others (other
    engines') read the same: within a thousandth of a dB (each engine
    filters in its own precision), the same peak to float rounding."""
    first = results[0]
    for other in results[1:]:
        assert (other.integrated is None) == (first.integrated is None)
        if first.integrated is not None:
            assert other.integrated == pytest.approx(first.integrated, abs=0.001)
        assert other.peak == pytest.approx(first.peak, rel=2e-6)
        assert other.blocks == first.blocks
    return first


def measure(path: Path, chunk: int = 65536) -> Loudness:
    """``path`` measured by every engine, which must agree."""
    rate, channels, width, data = decoded(path)
    return agreeing([fed(Meter(rate, channels, width, engines=[e]), data, chunk) for e in engines()])


def loudgain(*paths: Path) -> dict[str, tuple[float, float]]:
    """loudgain's (loudness LUFS, true peak linear) by file name, and of the album as 'Album' with two files or more."""
    require("loudgain")
    args = ["loudgain", "-q", "-O", *(["-a"] if len(paths) > 1 else []), *map(str, paths)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines()[1:]:
        cells = line.split("\t")
        found[Path(cells[0]).name] = (float(cells[1].split()[0]), float(cells[3]))
    return found


def ffmpeg_ebur128(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBFS) from the summary ffmpeg's ebur128 filter prints."""
    err = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true", "-f", "null", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    summary = err[err.rindex("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.inf]+) dBFS", summary).group(1))
    return integrated, peak


def db(linear: float) -> float:
    return 20 * math.log10(linear)


CASES = {
    "sine 44.1k 16-bit": (44100, 16, 2, ("2", "sine", "997", "vol", "0.5")),
    "pink noise 48k 24-bit": (48000, 24, 2, ("3", "pinknoise", "vol", "0.3")),
    "silence-padded": (44100, 16, 2, ("1", "sine", "1000", "vol", "0.5", "pad", "1", "1.5")),
    "5.1": (
        48000,
        16,
        6,
        ("2", "sine", "440", "sine", "550", "sine", "660", "sine", "77", "sine", "880", "sine", "990"),
    ),
    "8k mono": (8000, 16, 1, ("2", "sine", "440", "vol", "0.7")),
    "8k 8-bit": (8000, 8, 1, ("2", "pinknoise", "vol", "0.5")),
    "96k 24-bit": (96000, 24, 2, ("1.5", "pinknoise", "vol", "0.4")),
    "192k 24-bit": (192000, 24, 2, ("1", "sine", "1000", "vol", "0.7")),
}


@pytest.mark.parametrize("case", CASES)
def test_a_track_reads_as_loudgain_and_ffmpeg_read_it(tmp_path: Path, case: str):
    rate, bits, channels, effects = CASES[case]
    path = synth(tmp_path / "t.flac", rate, bits, channels, *effects)
    ours = measure(path, chunk=12345)  # chunks that split frames
    theirs, their_peak = loudgain(path)["t.flac"]
    assert ours.integrated == pytest.approx(theirs, abs=0.1)
    assert db(ours.peak) == pytest.approx(db(their_peak), abs=0.1)
    integrated, peak = ffmpeg_ebur128(path)
    assert ours.integrated == pytest.approx(integrated, abs=0.1)
    if case != "8k 8-bit":
        # ffmpeg oversamples every rate to 192 kHz (24 times at 8 kHz),
        # libebur128 and the meter 4 times: on noise reaching 4 kHz they
        # differ by about 0.2 dB there.
        assert db(ours.peak) == pytest.approx(peak, abs=0.1)


def test_the_low_frequency_channel_does_not_count_and_the_surrounds_count_more(tmp_path: Path):
    assert channel_weights(6) == (1.0, 1.0, 1.0, 0.0, pytest.approx(1.41, abs=0.005), pytest.approx(1.41, abs=0.005))
    tone = ("1", "sine", "1000", "vol", "0.5")
    front = measure(synth(tmp_path / "front.flac", 48000, 16, 1, *tone)).integrated
    lfe = measure(synth(tmp_path / "lfe.flac", 48000, 16, 6, *tone, "remix", "0", "0", "0", "1", "0", "0"))
    surround = measure(synth(tmp_path / "ls.flac", 48000, 16, 6, *tone, "remix", "0", "0", "0", "0", "1", "0"))
    assert lfe.integrated is None and lfe.peak > 0.49  # measured for its peak, silent for loudness
    assert surround.integrated == pytest.approx(front + 1.5, abs=0.02)


def test_silence_and_a_track_shorter_than_one_block_have_no_loudness(tmp_path: Path):
    silent = measure(synth(tmp_path / "silent.flac", 44100, 16, 2, "1", "sine", "1000", "vol", "0"))
    assert silent.integrated is None and silent.peak == 0 and not silent.blocks
    short = measure(synth(tmp_path / "short.flac", 44100, 16, 2, "0.35", "sine", "1000", "vol", "0.5"))
    assert short.integrated is None and short.peak > 0.49
    assert album([silent, short]).integrated is None


def exact_blocks(path: Path) -> list[float]:
    """Every 400 ms block's energy, computed on the whole signal at once
    (no streaming, no histogram): the reference the meter must match."""
    rate, channels, width, data = decoded(path)
    assert width in (2, 3)
    if width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
        samples = (
            raw[:, 0].astype(np.int32) << 8 | raw[:, 1].astype(np.int32) << 16 | raw[:, 2].astype(np.int32) << 24
        ) / 2**31
    else:
        samples = np.frombuffer(data, dtype="<i2") / 2**15
    filtered = signal.sosfilt(np.array(k_weighting(rate)), samples.reshape(-1, channels), axis=0)
    weighted = np.square(filtered) @ np.array(channel_weights(channels))
    step = (rate + 5) // 10
    return [float(weighted[s : s + 4 * step].mean()) for s in range(0, len(weighted) - 4 * step + 1, step)]


def exact_gating(energies: list[float]) -> float:
    loud = [e for e in energies if -0.691 + 10 * math.log10(e or 1e-30) >= -70]
    threshold = -0.691 + 10 * math.log10(sum(loud) / len(loud)) - 10
    kept = [e for e in loud if -0.691 + 10 * math.log10(e) > threshold]
    return -0.691 + 10 * math.log10(sum(kept) / len(kept))


def album_tracks(folder: Path) -> list[Path]:
    """Four tracks of different loudness and length, some with quiet parts."""
    folder.mkdir()
    return [
        synth(folder / "1.flac", 44100, 16, 2, "2", "pinknoise", "vol", "0.2", "fade", "0.5", "2", "0.7"),
        synth(folder / "2.flac", 44100, 16, 2, "1.5", "sine", "440", "vol", "0.6", "pad", "0.8", "0"),
        synth(folder / "3.flac", 44100, 24, 2, "3", "pinknoise", "vol", "0.05"),
        synth(folder / "4.flac", 44100, 16, 2, "1", "sine", "3000", "vol", "0.9"),
    ]


def test_the_histogram_gates_within_a_hundredth_of_a_db_of_every_block(tmp_path: Path):
    tracks = album_tracks(tmp_path / "album")
    measured = [measure(t) for t in tracks]
    blocks = [exact_blocks(t) for t in tracks]
    for ours, exact in zip(measured, blocks, strict=True):
        assert ours.integrated == pytest.approx(exact_gating(exact), abs=0.01)
    assert album(measured).integrated == pytest.approx(exact_gating([e for b in blocks for e in b]), abs=0.01)


def test_album_mode_reads_as_loudgain_album_mode_from_tracks_measured_apart(tmp_path: Path):
    tracks = album_tracks(tmp_path / "album")
    measured = [Loudness.from_wire(measure(t).to_wire()) for t in tracks]  # as from other hosts
    theirs = loudgain(*tracks)
    together = album(reversed(measured))
    assert together.integrated == pytest.approx(theirs["Album"][0], abs=0.1)
    assert db(together.peak) == pytest.approx(db(theirs["Album"][1]), abs=0.1)
    assert together.integrated != pytest.approx(
        sum(m.integrated for m in measured) / len(measured), abs=0.5
    )  # gated over the blocks, not an average
    assert album([together]) == together


@pytest.mark.parametrize("rate", [8000, 96000])
def test_the_result_does_not_depend_on_the_chunks(tmp_path: Path, rate: int):
    rate, channels, width, data = decoded(synth(tmp_path / "t.flac", rate, 24, 3, "0.9", "pinknoise", "vol", "0.8"))
    for engine in engines():
        whole = fed(Meter(rate, channels, width, engines=[engine]), data, 1 << 30)
        for chunk in (7, 1000, 40000):  # 7 bytes: frames of 9 split every way
            assert fed(Meter(rate, channels, width, engines=[engine]), data, chunk) == whole


@pytest.mark.parametrize("channels", [1, 3, 5, 8])
@pytest.mark.parametrize(("width", "floating"), [(1, False), (2, False), (3, False), (4, False), (4, True)])
def test_every_engine_reads_every_sample_format_alike(width: int, floating: bool, channels: int):
    rate = 48000
    t = np.arange(rate) / rate
    tones = np.stack([(0.2 + 0.1 * c) * np.sin(2 * np.pi * (300 + 700 * c) * t) for c in range(channels)], axis=1)
    if floating:
        data = tones.astype("<f4").tobytes()
    elif width == 1:
        data = np.round(tones * 127 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        data = np.round(tones * 2**23).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = np.round(tones * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}").tobytes()
    results = [fed(Meter(rate, channels, width, floating, engines=[e]), data, 3000) for e in engines()]
    found = agreeing(results)
    assert found.integrated is not None and found.peak == pytest.approx(0.1 + 0.1 * channels, abs=0.01)


def test_a_measurement_from_the_wire_is_checked(tmp_path: Path):
    m = measure(synth(tmp_path / "t.flac", 44100, 16, 2, "1", "pinknoise", "vol", "0.3"))
    assert Loudness.from_wire(m.to_wire()) == m
    assert len(repr(m.to_wire())) < 8000  # a few KB however long the track: one count a 0.01 LU bin
    for bad in (
        {**m.to_wire(), "bins": [BINS]},
        {**m.to_wire(), "counts": [-1] * len(m.bins)},
        {**m.to_wire(), "peak": float("nan")},
        {**m.to_wire(), "bins": list(reversed(m.bins))},
        {"integrated": None},
        "not a dict",
    ):
        with pytest.raises(ValueError):
            Loudness.from_wire(bad)


def test_a_meter_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError):
        Meter(44100, 9, 2)
    with pytest.raises(ValueError):
        Meter(44100, 2, 5)
    with pytest.raises(ValueError):  # the K-weighting is unstable this low (its energies overflow)
        Meter(3000, 1, 2)


def test_float_samples_that_are_not_numbers_do_not_stop_the_meter():
    samples = np.full((48000, 2), 0.25, dtype="<f4")
    samples[1000:1010] = np.inf
    samples[20000:20010] = np.nan
    for engine in engines():
        found = fed(Meter(48000, 2, 4, True, engines=[engine]), samples.tobytes(), 4096)
        assert found.blocks < 7  # the blocks the infinities and NaNs reach are left out


def every_interpolated_value(samples: np.ndarray, rate: int) -> float:
    """The true peak with every value interpolated (no value skipped): the
    whole signal through the oversampling filter at once, in double precision."""
    factor, taps = oversampling(rate)
    up = signal.upfirdn(np.array(taps), samples.astype(np.float64), up=factor, axis=0)
    return float(np.abs(up[: len(samples) * factor]).max())


def test_the_true_peak_interpolates_only_where_the_peak_can_change_and_stays_exact():
    rate = 44100
    t = np.arange(rate) / rate
    # A loud low tone first, then a quieter-sampled tone at a quarter of the
    # rate whose samples miss its crests: its true peak (0.9) is above the
    # tone's sample peak (0.7), its samples (0.64) below it.
    low = 0.7 * np.sin(2 * np.pi * 100 * t)
    high = 0.9 * np.sin(2 * np.pi * (rate / 4) * t + np.pi / 4)
    noise = np.random.default_rng(7).normal(0, 0.1, (rate, 2)).clip(-0.6, 0.6)
    for mono in (np.concatenate((low, high)), np.concatenate((high, low))):
        stereo = np.stack((mono, mono[::-1]), axis=1)
        for samples in (stereo, np.concatenate((noise, stereo))):
            pcm = np.round(samples * 32767).astype("<i2")
            expected = every_interpolated_value(pcm / 32768, rate)
            assert expected > 0.85
            for engine in engines():
                found = fed(Meter(rate, 2, 2, engines=[engine]), pcm.tobytes(), 20000)
                assert found.peak == pytest.approx(expected, rel=2e-6)  # float32 sums of 13 products


ALONE = """
import sys
import numpy as np
from flac2all.audio.filters import k_weighting
from flac2all.audio.npmeter import section_filter
run = section_filter()
assert "scipy.signal" not in sys.modules, "scipy.signal imported"
sos = np.array(k_weighting(44100), dtype=np.float32)
x = np.random.default_rng(3).normal(0, 0.3, (2, 5000)).astype(np.float32)
state = np.zeros((2, 2, 2), dtype=np.float32)
head, tail = x[:, :1234].copy(), x[:, 1234:].copy()
run(sos, head, state)
run(sos, tail, state)
from scipy import signal
assert np.array_equal(np.concatenate((head, tail), axis=1), signal.sosfilt(sos, x, axis=-1))
"""


def test_the_filter_loop_loads_alone_and_filters_as_scipy_signal_sosfilt():
    # in a process of its own: this one imported scipy.signal already
    subprocess.run([sys.executable, "-c", ALONE], check=True, capture_output=True)


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_the_filter_loop_through_scipy_signal_carries_its_state_across_chunks(channels: int):
    sos = np.array(k_weighting(48000), dtype=np.float32)
    x = np.random.default_rng(5).normal(0, 0.3, (channels, 3000)).astype(np.float32)
    state = np.zeros((channels, 2, 2), dtype=np.float32)
    head, tail = x[:, :1000].copy(), x[:, 1000:].copy()
    public_section_filter(sos, head, state)
    public_section_filter(sos, tail, state)
    assert np.allclose(np.concatenate((head, tail), axis=1), signal.sosfilt(sos, x, axis=-1), atol=1e-6)
