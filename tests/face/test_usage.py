"""The command line as a new user types it: mode names in any case,
suggestions for typos, ``mp3, opus`` with a space, option prefixes."""

from __future__ import annotations

import pytest

from flac2all.face.arguments import build_parser
from flac2all.face.config import settings_from
from tests.conftest import run_flac2all


def usage_error(run) -> str:
    """The one error line of a usage error (exit status 2)."""
    assert run.returncode == 2, run.stdout + run.stderr
    return run.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_mode_names_are_case_insensitive(library, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("MP3,Opus,F:ALAC", "-o", out, library)
    assert run.returncode == 0, run.stdout + run.stderr
    # Outputs and log rows under the modes' own names, whatever case was typed.
    assert {r["format"] for r in run.rows()} == {"mp3", "opus", "f:alac"}
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "f_alac",
        "mp3",
        "opus",
    ]


@pytest.mark.parametrize(
    ("mode", "hint"),
    [("mp4", "did you mean mp3?"), ("vorbiss", "did you mean vorbis?"), ("OPUSS", "did you mean opus?")],
)
def test_an_unknown_mode_suggests_the_nearest(library, tmp_path, mode, hint):
    run = run_flac2all(f"flac,{mode}", "-o", tmp_path / "out", library)
    line = usage_error(run)
    assert f"unknown mode '{mode}' ({hint})" in line
    assert "valid modes are: mp3, vorbis" in line
    assert not (tmp_path / "out").exists()


def test_an_unknown_mode_far_from_all_suggests_nothing(library, tmp_path):
    line = usage_error(run_flac2all("zzzz", "-o", tmp_path / "out", library))
    assert "unknown mode 'zzzz'; valid modes are" in line and "did you mean" not in line


def test_an_unknown_ffmpeg_encoder_suggests_the_nearest(library, tmp_path):
    line = usage_error(run_flac2all("f:libopu", "-o", tmp_path / "out", library))
    assert "unknown ffmpeg audio encoder in mode 'f:libopu' (did you mean f:libopus?)" in line


@pytest.mark.parametrize(
    "args",
    [
        ["mp3,", "opus", "{lib}"],
        ["mp3,", "Opus,", "vorbis", "{lib}"],
        ["mp3,", "-o", "{out}", "opus", "{lib}"],
        ["-o", "{out}", "mp3,", "opus", "{lib}", "-t", "2"],
    ],
)
def test_modes_split_by_a_space_after_the_comma_are_joined(library, tmp_path, args):
    out = tmp_path / "out"
    argv = [a.format(lib=library, out=out) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(out)]
    run = run_flac2all(*argv)
    assert run.returncode == 0, run.stdout + run.stderr
    expected = {"mp3", "opus", "vorbis"} if "vorbis" in args else {"mp3", "opus"}
    assert {r["format"] for r in run.rows()} == expected
    assert len(run.rows()) == 3 * len(expected)


def test_modes_split_by_a_space_without_inputdir_ask_for_inputdir(tmp_path):
    line = usage_error(run_flac2all("mp3,", "opus", "-o", tmp_path / "out"))
    assert line == "flac2all: error: the following arguments are required: INPUTDIR"


def test_a_trailing_comma_before_inputdir_still_works(library, tmp_path):
    run = run_flac2all("mp3,", library, "-o", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert {r["format"] for r in run.rows()} == {"mp3"}


def test_a_folder_named_like_a_mode_is_not_taken_as_a_mode(library, tmp_path):
    # "mp3, opus lib" where ./opus is a folder: INPUTDIR is the folder, and
    # the leftover argument is explained in one line.
    (tmp_path / "opus").mkdir()
    line = usage_error(run_flac2all("mp3,", "opus", library, cwd=tmp_path))
    assert f"unrecognized arguments: {library}" in line
    assert "MODE ends with a comma: no space after the comma (as in mp3,opus)" in line


def test_a_path_after_a_trailing_comma_stays_inputdir(tmp_path):
    # Not joined into the modes: the message is about the folder.
    line = usage_error(run_flac2all("mp3,", tmp_path / "nope", "-o", tmp_path / "out"))
    assert "does not exist" in line


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("--lame-optoins=-V 2", "(did you mean --lame-options?)"),
        ("--outdr=x", "(did you mean --outdir?)"),
        ("--dryrun", "(did you mean --dry-run?)"),
        ("--embed-folder-arts", "(did you mean --embed-folder-art?)"),
    ],
)
def test_an_unknown_option_suggests_the_nearest(library, tmp_path, option, hint):
    line = usage_error(run_flac2all("mp3", option, "-o", tmp_path / "out", library))
    # With a space in it, argparse takes the option for INPUTDIR: the real
    # INPUTDIR is then left over too.
    assert line.startswith(f"flac2all: error: unrecognized arguments: {option} ")
    assert line.endswith(f" {hint}")
    assert not (tmp_path / "out").exists()


def test_two_unknown_options_get_a_suggestion_each(library, tmp_path):
    line = usage_error(run_flac2all("mp3", "--outdr", "x", "--opus-optoins=vbr", library))
    assert "(did you mean --outdir for --outdr, --opus-options for --opus-optoins?)" in line


def test_an_unknown_option_far_from_all_suggests_nothing(library, tmp_path):
    line = usage_error(run_flac2all("mp3", "--zzzzzz", "-o", tmp_path / "out", library))
    assert line == "flac2all: error: unrecognized arguments: --zzzzzz"


def test_an_unambiguous_prefix_of_an_option_is_that_option(library, tmp_path):
    # argparse's own abbreviations still work (--lame-option is --lame-options).
    settings, _ = settings_from(build_parser().parse_args(["mp3", "in", "--lame-option=-preset medium"]))
    assert settings.options["lame"] == ("--preset", "medium")
    run = run_flac2all("mp3", "--lame-option=-preset medium", "-o", tmp_path / "out", library)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("args", [["{lib}"], ["{lib}", "-o", "{out}"], ["{lib}", "{out}"], ["music"]])
def test_a_folder_where_the_modes_go_is_named(library, tmp_path, args):
    # flac2all ~/music: the shell gives /home/me/music as MODE.
    line = usage_error(run_flac2all(*[a.format(lib=library, out=tmp_path / "out") for a in args], cwd=tmp_path))
    folder = "music" if args == ["music"] else str(library)
    assert line == (
        f"flac2all: error: {folder} is a folder, given where the modes go: name the modes first, as in "
        f"flac2all mp3 {folder} (see flac2all --help for the modes)"
    )
