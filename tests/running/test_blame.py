"""Which stage of a pipeline is blamed: the one that failed first, never an
adapter feeding it nor one that died of the broken pipe behind it."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from flac2all.running.blame import blame
from tests.conftest import make_flac, read_log, run_flac2all, temp_files

BAD_OPTION = "ERROR: lame exited with status 1: lame: unrecognized option --V"


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """A stereo source (lame reads it directly), a 5.1 one and a 96 kHz one
    (an ffmpeg stage adapts them for lame). Long enough that the adapter's
    output does not fit in a pipe before lame exits."""
    root = tmp_path / "in"
    make_flac(root / "stereo.flac", seconds=0.5)
    make_flac(root / "surround.flac", seconds=3, channels=6)
    make_flac(root / "hires.flac", seconds=2, rate=96000, bits=24)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("modes", ["mp3", "mp3,opus"])
def test_a_bad_lame_option_is_blamed_on_lame_behind_an_adapter(shapes, tmp_path, modes, fake_bin):
    # One mode: a plain pipe; two: one decoder feeding both (the fan-out).
    # The real lame, refusing an option only when it encodes (a refused
    # --lame-options is caught before the run: tests/codecs/test_options.py).
    path = fake_bin("lame", f'exec -a lame {shutil.which("lame")} --V 2 "$@"\n')
    out = tmp_path / "out"
    run = run_flac2all(modes, "-o", out, shapes, path_prefix=path, timeout=60)
    assert run.returncode == 1
    rows = read_log(out)
    mp3 = [r for r in rows if r["format"] == "mp3"]
    assert len(mp3) == 3
    for row in mp3:
        assert row["conversion_status"] == BAD_OPTION, row
        assert row["return_code"] == "1"
    assert all(r["conversion_status"] == "SUCCESS" for r in rows if r["format"] == "opus")
    assert "Broken pipe" not in run.stdout
    assert temp_files(out) == []


def test_an_encoder_exiting_at_once_is_blamed_not_the_adapter_feeding_it(shapes, tmp_path, fake_bin):
    path = fake_bin("lame", "echo 'lame: out of patience' >&2\nexit 3\n")
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-o", out, shapes, path_prefix=path, timeout=60)
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == 3
    for row in rows:
        assert row["conversion_status"] == "ERROR: lame exited with status 3: lame: out of patience", row
        assert row["return_code"] == "3"


PIPE = -signal.SIGPIPE


FFMPEG_EPIPE = "av_interleaved_write_frame(): Broken pipe\nError closing file pipe:1: Broken pipe\n"


ADAPTED = ("flac", "ffmpeg", "lame")


@pytest.mark.parametrize(
    "programs,codes,stderrs,expected",
    [
        pytest.param(ADAPTED, [0, 0, 0], ["", "", ""], None, id="success"),
        pytest.param(
            ADAPTED,
            [PIPE, 1, 1],
            ["", FFMPEG_EPIPE, "lame: unrecognized option --V\n"],
            "lame exited with status 1: lame: unrecognized option --V",
            id="encoder-behind-adapter",
        ),
        pytest.param(
            ADAPTED,
            [1, 0, 1],
            ["flac: ERROR while decoding data\n", "", "lame: input ended early, error\n"],
            "flac exited with status 1: flac: ERROR while decoding data",
            id="decoder-first-then-truncated-input",
        ),
        pytest.param(
            ("flac", "lame"),
            [PIPE, 0],
            ["", ""],
            "lame exited with status 0 before reading all its input",
            id="only-a-symptom-is-left: its reader left early",
        ),
        pytest.param(
            ("flac", "ffmpeg", "lame"),
            [0, PIPE, 0],
            ["", "", ""],
            "lame exited with status 0 before reading all its input",
            id="the adapter's reader left early",
        ),
        pytest.param(
            ("flac", "ffmpeg"),
            [0, 0],
            ["", "Error writing trailer of file:/o/x.m4a: No space left on device\n"],
            "ffmpeg reported: Error writing trailer of file:/o/x.m4a: No space left on device",
            id="ffmpeg-exits-0-on-a-full-disk",
        ),
        pytest.param(
            ADAPTED,
            [PIPE, 1, 1],
            ["", FFMPEG_EPIPE, "lame: some progress\nError writing mp3 output\nlame: bye\n"],
            "lame exited with status 1: Error writing mp3 output",
            id="write-failure-line-preferred",
        ),
    ],
)
def test_blame_names_the_stage_that_failed_first(programs, codes, stderrs, expected):
    failure = blame(list(programs), codes, stderrs)
    assert (failure.message if failure else None) == expected
