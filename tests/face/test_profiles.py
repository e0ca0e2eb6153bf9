"""Device profiles: the TOML file, its checks, the command line over it,
several profiles in turn, and the --on-done hook."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mutagen.id3 import ID3

import flac2all
from flac2all.audio import cmeter
from flac2all.face import config
from flac2all.face.arguments import build_parser
from flac2all.face.config import ConfigError, settings_from
from flac2all.model import AlbumBy, Layout, Lossy, Names, ReplayGain
from tests.conftest import make_flac, read_log, run_flac2all

CONFIG = """\
# two devices
[profile.car]
modes = ["mp3"]
input = "music"
outdir = "car"
lame-options = "V 2"
names = "fat32"
art-max-size = 500
lossy = "copy"
playlists = true
delete = true

[profile."phone"]
modes = "opus,vorbis"
input = "~/music"
outdir = "/media/phone"
threads = 2
nodirs = "m"
"id3v2.3" = true
max-bitrate = 256
on-done = "notify-send done"
"""


def runs(tmp_path: Path, text: str, *argv: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    parser = build_parser()
    given = parser.parse_given(["--config", str(path), *argv])
    return [(name, settings_from(ns)[0], ns) for name, ns in config.runs(parser.options, given)]


def test_profiles_become_the_settings_the_command_line_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (car, s, ns), (phone, p, pns) = runs(tmp_path, CONFIG, "--all-profiles")
    assert (car, phone) == ("car", "phone")
    # Relative paths are the config file's folder's; '~' is the home.
    assert s.input_dir == tmp_path / "music" and s.outdir == tmp_path / "car"
    assert s.modes == ("mp3",) and s.options["lame"] == ("-V", "2")
    assert (s.names, s.art_max_size, s.lossy, s.playlists, s.delete) == (Names.FAT32, 500, Lossy.COPY, True, True)
    assert p.input_dir == tmp_path / "home" / "music" and p.modes == ("opus", "vorbis")
    assert (p.threads, p.layout, p.id3v23, p.max_bitrate) == (2, Layout.NO_MODE_DIRS, True, 256)
    assert pns.on_done == "notify-send done" and ns.on_done is None
    # The same command line without a profile builds the same Settings.
    line = build_parser().parse_args(
        [
            "mp3",
            str(tmp_path / "music"),
            "-o",
            str(tmp_path / "car"),
            "--lame-options=V 2",
            "--names",
            "fat32",
            "--art-max-size",
            "500",
            "--lossy",
            "copy",
            "--playlists",
            "--delete",
        ]
    )
    assert settings_from(line)[0] == s


def test_the_command_line_overrides_the_profile(tmp_path):
    [(_, s, ns)] = runs(tmp_path, CONFIG, "--profile", "car", "-t", "1", "--names", "posix", "--dry-run", "opus")
    assert s.threads == 1 and s.names is Names.POSIX and s.modes == ("opus",) and ns.dry_run
    assert s.options["lame"] == ("-V", "2")  # the rest is the profile's
    [(_, s, _)] = runs(tmp_path, CONFIG, "--profile", "phone", "--profile", "phone")  # once each
    assert s.threads == 2


def test_the_command_line_names_mode_and_input_around_its_options(tmp_path):
    [(_, s, _)] = runs(tmp_path, CONFIG, "opus", "--profile", "car", "-t", "1", str(tmp_path / "elsewhere"))
    assert (s.modes, s.input_dir, s.threads) == (("opus",), tmp_path / "elsewhere", 1)
    # Modes the shell split: the profile's input stays.
    [(_, s, _)] = runs(tmp_path, CONFIG, "--profile", "car", "mp3,", "opus")
    assert (s.modes, s.input_dir) == (("mp3", "opus"), tmp_path / "music")


@pytest.mark.parametrize(
    "body, line, message",
    [
        ('modes = ["mp3"]\nthreds = 2\n', 3, "[profile.car] threds: unknown key (did you mean threads?)"),
        ('modes = ["mp3"]\n  threads = 0\n', 3, "[profile.car] threads: must be at least 1, not 0"),
        ("modes = ['mp3', 'wav']\n", 2, "[profile.car] modes: unknown mode 'wav'"),
        ('modes = "mp3"\nnames = "vfat"\n', 3, "[profile.car] names: must be one of: posix, fat32"),
        ('modes = "mp3"\ndelete = "yes"\n', 3, "[profile.car] delete: must be true or false"),
        ('modes = "mp3"\nart-max-size = "big"\n', 3, "[profile.car] art-max-size: must be a number"),
        ('modes = "mp3"\nlame-options = "V \'x"\n', 3, "[profile.car] lame-options: cannot parse"),
        ('modes = "mp3"\non-done = "notify \'x"\n', 3, "[profile.car] on-done: cannot split"),
        ('modes = "mp3"\n', 1, "[profile.car]: no 'input' (nor on the command line)"),
    ],
)
def test_a_bad_key_names_the_file_line_and_key(tmp_path, body, line, message):
    with pytest.raises(ConfigError) as err:
        runs(tmp_path, "[profile.car]\n" + body, "--profile", "car")
    assert str(err.value).startswith(f"{tmp_path / 'config.toml'}, line {line}: {message}")


def test_the_file_itself_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"line 1: profiles: unknown key"):
        runs(tmp_path, "profiles = 1\n", "--all-profiles")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        runs(tmp_path, "[profile.car\n", "--all-profiles")
    with pytest.raises(ConfigError, match=r"no profile 'bus' \(its profiles: car, phone\)"):
        runs(tmp_path, CONFIG, "--profile", "bus")
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "none.toml", build_parser().options)


def test_key_line_finds_dotted_and_quoted_keys():
    text = '[profile]\ncar.modes = "mp3"\n[profile."my phone"]\n "lame-options" = "V 2"\n'
    assert config.key_line(text, ["profile", "car", "modes"]) == 2
    assert config.key_line(text, ["profile", "my phone", "lame-options"]) == 4
    assert config.key_line(text, ["profile", "my phone", "threads"]) == 3  # its table's header


def test_help_lists_the_profile_options():
    out = run_flac2all("--help").stdout
    for word in ("--config", "--profile", "--all-profiles", "--names", "--lossy", "--max-bitrate"):
        assert word in out
    for word in ("--art-max-size", "--playlists", "--on-done", "[profile.car]", "lame-options"):
        assert word in out


@pytest.mark.slow
def test_two_profiles_in_turn_with_dry_run_and_one_hook(library, tmp_path):
    cfg = tmp_path / "config.toml"
    hook = tmp_path / "hook.json"
    cfg.write_text(
        f'[profile.a]\nmodes = ["mp3"]\ninput = "{library}"\noutdir = "out-a"\n'
        f'[profile.b]\nmodes = ["opus"]\ninput = "{library}"\noutdir = "out-b"\n'
    )
    dry = run_flac2all("--config", cfg, "--all-profiles", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("dry run: nothing changed") == 2 and "encode  3" in dry.stdout
    assert not (tmp_path / "out-a").exists() and not (tmp_path / "out-b").exists()
    hook_cmd = f"sh -c 'cat > {hook}'"
    done = run_flac2all("--config", cfg, "--profile", "a", "--profile", "b", "-q", "--on-done", hook_cmd)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out-a" / "mp3").rglob("*.mp3"))) == 3
    assert len(list((tmp_path / "out-b" / "opus").rglob("*.opus"))) == 3
    summary = json.loads(hook.read_text())
    assert summary["exit_status"] == 0 and [r["profile"] for r in summary["runs"]] == ["a", "b"]
    assert [r["done"]["encode"] for r in summary["runs"]] == [3, 3]
    # A failing hook fails the run; a missing input fails its profile only.
    text = cfg.read_text()
    cfg.write_text(text.replace(f'input = "{library}"\noutdir = "out-a"', 'input = "nope"\noutdir = "out-a"'))
    again = run_flac2all("--config", cfg, "--all-profiles", "-q", "--on-done", "false")
    assert again.returncode == 2
    assert "profile a: input folder" in again.stderr and "--on-done false: exited with status 1" in again.stderr
    assert again.stdout == ""  # profile b ran: -q, and nothing changed
    assert read_log(tmp_path / "out-b")[0]["conversion_status"] == "SUCCESS (skipped: up to date)"


@pytest.mark.slow
def test_each_profile_s_summary_is_named(library, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[profile.car]\nmodes = ["mp3"]\ninput = "{library}"\noutdir = "out-a"\n'
        f'[profile.phone]\nmodes = ["opus"]\ninput = "{library}"\noutdir = "out-b"\n'
    )
    quiet = run_flac2all("--config", cfg, "--all-profiles", "-q")
    assert quiet.returncode == 0 and quiet.stdout == "car: 3 encoded\nphone: 3 encoded\n"
    loud = run_flac2all("--config", cfg, "--all-profiles")
    assert loud.stdout.count("| Summary of profile car ===") == 1
    assert loud.stdout.count("| Summary of profile phone ===") == 1
    assert loud.stdout.count("nothing to do: 3 outputs up to date") == 2


def test_config_without_a_profile_is_a_usage_error(library, tmp_path):
    run = run_flac2all("mp3", library, "-o", tmp_path / "o", "--config", tmp_path / "c.toml")
    assert run.returncode == 2 and "add --profile NAME or --all-profiles" in run.stderr


@pytest.mark.slow
def test_a_tilde_is_the_home_in_on_done_and_in_every_path(library, tmp_path):
    home = Path(os.environ["HOME"])
    (home / "bin").mkdir(parents=True)
    hook = home / "bin" / "hook"
    hook.write_text(f"#!/bin/sh\ncat > {tmp_path / 'hook.json'}\n")
    hook.chmod(0o755)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[profile.a]\nmodes = ["mp3"]\ninput = "{library}"\noutdir = "~/out"\non-done = "~/bin/hook"\n')
    done = run_flac2all("--config", cfg, "--profile", "a", "-q", "--plan-json=~/plan.json")
    assert done.returncode == 0, done.stderr
    assert len(list((home / "out" / "mp3").rglob("*.mp3"))) == 3
    assert json.loads((tmp_path / "hook.json").read_text())["runs"][0]["done"]["encode"] == 3
    assert (home / "plan.json").is_file()
    # On the command line, where the shell leaves '~' after '=' alone.
    cli = run_flac2all("mp3", library, "--outdir=~/cli-out", "-q", "--on-done", "~/bin/hook")
    assert cli.returncode == 0, cli.stderr
    assert len(list((home / "cli-out" / "mp3").rglob("*.mp3"))) == 3 and not Path("~").exists()


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_config_that_is_not_a_regular_file_is_refused_unread(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "config.toml"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    run = run_flac2all("--profile", "x", "--config", path, timeout=30)
    assert run.returncode == 2
    kind_name = "FIFO" if kind == "fifo" else "character device"
    assert f"flac2all: error: {path}: cannot read it: not a regular file ({kind_name})" in run.stderr


def test_a_config_too_large_to_be_one_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"# " + b"x" * (2 * 1024 * 1024) + b"\n")
    run = run_flac2all("--profile", "x", "--config", path, timeout=30)
    assert run.returncode == 2 and f"{path}: cannot read it: larger than 1024 KiB" in run.stderr


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (
            'modes = ["mp3", "opus"]\nlame-options = "-V:5"\ninput = "{library}"\noutdir = "out"',
            "in mode mp3 with different encoder options",
        ),
        ('modes = ["mp3"]\ninput = "{other}"\noutdir = "out"', "from different inputs ({library} and {other})"),
        (
            'modes = ["mp3"]\nlame-options = "-V:5"\ninput = "{library}"\noutdir = "alias"',
            "in mode mp3 with different encoder options",
        ),
        (
            'modes = ["mp3", "opus"]\ninput = "{library}"\noutdir = "out"\nquery = "genre=Jazz"',
            "in mode mp3 with different selections or path formats",
        ),
        (
            'modes = ["mp3"]\ninput = "{library}"\noutdir = "out"\npath-format = "{{album}}/{{title}}"',
            "in mode mp3 with different selections or path formats",
        ),
    ],
    ids=["options", "inputs", "through-a-link", "selection", "path-format"],
)
def test_two_profiles_undoing_each_other_in_one_outdir_are_refused(library, tmp_path, second, why):
    """Each run of such a pair would re-encode (or take for orphans) what
    the other wrote, every time: refused before any work, naming both. A
    folder named through a link (OUTDIR, or the input) is that folder."""
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "out")
    link = tmp_path / "library-link"
    link.symlink_to(library)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[profile.stick]\nmodes = ["mp3"]\ninput = "{library}"\noutdir = "out"\n'
        f"[profile.car]\n{second.format(library=library, other=other)}\n"
        f'[profile.phone]\nmodes = ["opus"]\ninput = "{link}"\noutdir = "alias"\n'
    )
    run = run_flac2all("--config", cfg, "--all-profiles", "-q", timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    message = why.format(library=library, other=other)
    assert f"flac2all: error: profiles stick and car both write into {tmp_path / 'out'} {message}" in run.stderr
    assert not list((tmp_path / "out").iterdir())
    # Profiles that agree on what belongs there share it.
    fine = run_flac2all("--config", cfg, "--profile", "stick", "--profile", "phone", "--dry-run", timeout=60)
    assert fine.returncode == 0, fine.stderr


def test_a_slow_on_done_hook_is_waited_for_and_a_signal_stops_it(library, tmp_path):
    """A hook that takes its time gets the summary (its second half-second
    of waiting raised ValueError: the summary sent again); a SIGTERM while
    a hook runs stops it within seconds."""
    hook = tmp_path / "hook.json"
    slow = f"sh -c 'sleep 1.2; cat > {hook}'"
    done = run_flac2all("mp3", library, "-o", tmp_path / "out", "-q", "--on-done", slow, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(hook.read_text())["runs"][0]["done"]["encode"] == 3
    started = tmp_path / "started"
    stuck = f"sh -c 'touch {started}; sleep 100'"
    argv = [sys.executable, "-m", "flac2all", "mp3", library, "-o", tmp_path / "out", "-q", "--on-done", stuck]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert "--on-done sh: stopped by a signal" in err


def test_replaygain_is_a_profile_key_and_without_a_meter_stops_before_any_work(library, tmp_path, monkeypatch):
    (_, settings, _), *_ = runs(
        tmp_path, '[profile.p]\nmodes = "mp3"\ninput = "in"\noutdir = "o"\nreplaygain = "fill"\n', "--profile", "p"
    )
    assert settings.replaygain is ReplayGain.FILL
    (_, default, _), *_ = runs(tmp_path, '[profile.p]\nmodes = "mp3"\ninput = "in"\noutdir = "o"\n', "--profile", "p")
    assert default.replaygain is ReplayGain.KEEP
    hidden = tmp_path / "hidden"
    (hidden / "numpy").mkdir(parents=True)
    (hidden / "numpy" / "__init__.py").write_text("raise ImportError('numpy hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(hidden))
    if cmeter.kernel() is not None:  # the C loop measures without numpy
        make_flac(tmp_path / "long" / "a.flac", seconds=1.0, tags={"TITLE": "A"})  # a 400 ms block or more
        run = run_flac2all("mp3", "--replaygain", "compute", "-o", tmp_path / "built", tmp_path / "long")
        assert run.returncode == 0, run.stderr
        assert "TXXX:REPLAYGAIN_TRACK_GAIN" in ID3(tmp_path / "built" / "mp3" / "a.mp3")
    # a copy of the package without its built C loop, first on the path
    shutil.copytree(
        Path(flac2all.__file__).parent, hidden / "flac2all", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    run = run_flac2all("mp3", "--replaygain", "compute", "-o", tmp_path / "out", library)
    assert run.returncode == 2
    assert "install flac2all[loudness]" in run.stderr
    assert not (tmp_path / "out").exists()
    assert run_flac2all("mp3", "--replaygain", "off", "-o", tmp_path / "out", library).returncode == 0


def test_album_by_is_a_profile_key_and_an_option(tmp_path):
    base = '[profile.p]\nmodes = "mp3"\ninput = "in"\noutdir = "o"\n'
    (_, settings, _), *_ = runs(tmp_path, base + 'album-by = "tags"\n', "--profile", "p")
    assert settings.album_by is AlbumBy.TAGS
    (_, default, _), *_ = runs(tmp_path, base, "--profile", "p")
    assert default.album_by is AlbumBy.FOLDER
    (_, given, _), *_ = runs(tmp_path, base + 'album-by = "tags"\n', "--profile", "p", "--album-by", "folder")
    assert given.album_by is AlbumBy.FOLDER  # the command line over the profile
    with pytest.raises(ConfigError, match="album-by"):
        runs(tmp_path, base + 'album-by = "disc"\n', "--profile", "p")
