"""Encoder options are checked once, before any file is touched: a wrong
option copied from a forum stops the run with the encoder's own message
before any output is written, whatever the sources (a 5.1 source reaches
lame through ffmpeg, and lame, not ffmpeg, is named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flac2all import codecs
from flac2all.model import Settings
from tests.conftest import make_flac, read_log, run_flac2all


@pytest.mark.parametrize(
    ("mode", "option", "program", "said"),
    [
        ("mp3", "--lame-options=-V 2", "lame", "lame: unrecognized option --V"),
        ("opus", "--opus-options=bitrate=potato", "opusenc", "opusenc"),
        ("aac", "--aac-options=-no-such-flag 1", "ffmpeg", "no-such-flag"),
    ],
)
def test_a_refused_option_stops_the_run_before_any_file_is_touched(tmp_path, mode, option, program, said):
    root = tmp_path / "music"
    make_flac(root / "surround.flac", channels=6, rate=96000, seconds=0.1)
    make_flac(root / "stereo.flac", seconds=0.1)
    out = tmp_path / "out"
    run = run_flac2all(mode, option, "-o", out, root)
    assert run.returncode == 2, run.stderr
    message = run.stderr.strip().splitlines()[-1]
    assert message.startswith(f"flac2all: error: mode {mode}: {program} refuses the options"), message
    assert said in message
    assert "Broken pipe" not in run.stderr and "Traceback" not in run.stderr
    # Nothing written: no output, no log (the state folder of a new mirror may be there).
    assert [p.name for p in out.iterdir()] == [".flac2all"]
    assert not any(p.is_file() and p.suffix in (".mp3", ".opus", ".m4a") for p in out.rglob("*"))


def test_good_options_pass_the_check_and_reach_the_encoder(tmp_path):
    root = tmp_path / "music"
    make_flac(root / "surround.flac", channels=6, rate=96000, seconds=0.1)
    run = run_flac2all("mp3", "--lame-options=V 2", "-o", tmp_path / "out", root)
    assert run.returncode == 0, run.stderr
    assert [r["conversion_status"] for r in read_log(tmp_path / "out")] == ["SUCCESS"]


def test_a_run_uses_its_own_options_even_empty_and_the_defaults_only_without_them():
    opus = codecs.resolve("opus")

    def options(**given) -> tuple[str, ...]:
        return opus.options_in(Settings(input_dir=Path("/in"), outdir=Path("/out"), modes=("opus",), **given))

    assert options() == opus.default_options != ()
    assert options(options={"opus": ("--bitrate", "96")}) == ("--bitrate", "96")
    assert options(options={"opus": ()}) == ()
