"""The command line: modes, options, layouts, skipping, copying, exit statuses."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from flac2all import codecs
from flac2all.cluster import setup
from flac2all.codecs.options import colon_options, comma_options
from flac2all.errors import UsageError
from flac2all.face import cli, config
from flac2all.face.arguments import build_parser
from flac2all.face.config import settings_from
from flac2all.model import DaskOptions, DisplayOptions, MasterOptions, default_threads
from tests.conftest import decodes, make_flac, read_log, run_flac2all, stream


def test_unknown_mode_is_a_usage_error_listing_the_valid_ones(library, tmp_path):
    run = run_flac2all("mp3,wav", "-o", tmp_path / "out", library)
    assert run.returncode == 2
    assert "unknown mode 'wav'" in run.stderr
    for mode in ("mp3", "vorbis", "opus", "aac", "flac", "test", "all", "f:"):
        assert mode in run.stderr
    assert not (tmp_path / "out").exists()  # before any work


def test_unknown_ffmpeg_encoder_is_a_usage_error(library, tmp_path):
    run = run_flac2all("f:nosuchcodec", "-o", tmp_path / "out", library)
    assert run.returncode == 2
    assert "unknown ffmpeg audio encoder" in run.stderr


@pytest.mark.parametrize(
    "args", [["mp3"], ["-t", "0", "mp3", "in"], ["-n", "x", "mp3", "in"], ["--bogus", "mp3", "in"]]
)
def test_bad_command_lines_exit_2(args):
    assert run_flac2all(*args).returncode == 2


def test_missing_input_folder_exits_2(tmp_path):
    run = run_flac2all("mp3", "-o", tmp_path / "out", tmp_path / "nope")
    assert run.returncode == 2
    assert "does not exist" in run.stderr


def test_missing_encoder_is_found_before_any_work(library, tmp_path):
    # A PATH holding every program but lame.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("flac", "oggenc", "opusenc", "ffmpeg", "setpriv", "bash", "sh"):
        (bin_dir / program).symlink_to(shutil.which(program))
    env_path = os.environ["PATH"]
    os.environ["PATH"] = str(bin_dir)
    try:
        run = run_flac2all("vorbis,mp3", "-o", tmp_path / "out", library)
    finally:
        os.environ["PATH"] = env_path
    assert run.returncode == 2
    assert "'lame'" in run.stderr and "apt-get install lame" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


def test_help_documents_every_mode_and_option():
    run = run_flac2all("--help")
    assert run.returncode == 0
    for word in (
        "mp3",
        "vorbis",
        "opus",
        "aac",
        "flac",
        "test",
        "f:ENC",
        "all",
        "--outdir",
        "--force",
        "--threads",
        "--nodirs",
        "--copy",
        "--lame-options",
        "--vorbis-options",
        "--opus-options",
        "--flac-options",
        "--ffmpeg-options",
        "--aac-options",
        "exit status",
    ):
        assert word in run.stdout


@pytest.mark.slow
def test_existing_outputs_are_skipped_as_success_then_forced(library, tmp_path):
    out = tmp_path / "out"
    assert run_flac2all("opus", "-o", out, library).returncode == 0
    output = out / "opus" / "Album A" / "01 one.opus"
    before = output.stat().st_mtime_ns, output.read_bytes()
    again = run_flac2all("opus", "-o", out, library)
    assert again.returncode == 0
    statuses = {r["conversion_status"] for r in again.rows()}
    assert statuses == {"SUCCESS (skipped: up to date)"}
    assert (output.stat().st_mtime_ns, output.read_bytes()) == before
    forced = run_flac2all("opus", "-f", "-o", out, library)
    assert forced.returncode == 0
    assert {r["conversion_status"] for r in forced.rows()} == {"SUCCESS"}
    assert output.stat().st_mtime_ns != before[0]


def test_nodirs_d_puts_everything_flat_and_reports_collisions(tmp_path):
    root = tmp_path / "in"
    make_flac(root / "a" / "song.flac")
    make_flac(root / "b" / "song.flac")
    make_flac(root / "b" / "other.flac")
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-n", "d", "-o", out, root)
    assert run.returncode == 1  # the second song.flac cannot have the same outputs
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "conversion_results.log",
        "other.mp3",
        "other.opus",
        "song.mp3",
        "song.opus",
    ]
    failed = [r for r in run.rows() if r["conversion_status"].startswith("ERROR")]
    assert len(failed) == 2 and all("same output" in r["conversion_status"] for r in failed)
    assert all(r["infile"] == str(root / "b" / "song.flac") for r in failed)


def test_nodirs_m_keeps_folders_without_mode_folders(library, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3,opus", "-n", "m", "-o", out, library)
    assert run.returncode == 0
    assert (out / "Album A" / "01 one.mp3").is_file()
    assert (out / "Album A" / "01 one.opus").is_file()
    assert not (out / "mp3").exists()


@pytest.mark.slow
def test_copy_copies_other_files_once_and_skips_unchanged(library, tmp_path):
    (library / "Album A" / "cover.jpg").write_bytes(b"\xff\xd8jpeg")
    (library / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    run = run_flac2all("mp3,test", "-c", "-o", out, library)
    assert run.returncode == 0, run.stdout
    assert (out / "mp3" / "Album A" / "cover.jpg").read_bytes() == b"\xff\xd8jpeg"
    assert (out / "mp3" / "notes.txt").read_text() == "hello"
    assert not (out / "test" / "notes.txt").exists()
    copies = [r for r in run.rows() if not r["infile"].endswith(".flac")]
    assert {r["conversion_status"] for r in copies} == {"SUCCESS (copied)"}
    again = run_flac2all("mp3,test", "-c", "-o", out, library)
    copies = [r for r in again.rows() if not r["infile"].endswith(".flac")]
    assert {r["conversion_status"] for r in copies} == {"SUCCESS (skipped: up to date)"}
    (library / "notes.txt").write_text("changed")
    third = run_flac2all("mp3", "-c", "-o", out, library)
    assert (out / "mp3" / "notes.txt").read_text() == "changed"
    assert any(r["conversion_status"] == "SUCCESS (copied)" for r in third.rows())


def test_outdir_inside_input_is_never_read_as_input(library):
    out = library / "converted"
    first = run_flac2all("flac", "-o", out, library)
    assert first.returncode == 0
    second = run_flac2all("flac", "-o", out, library)
    assert len(second.rows()) == 3  # not 6: the outputs were not taken as sources
    assert not (out / "flac" / "converted").exists()


@pytest.mark.slow
def test_input_inside_outdir_and_same_folder_modes(tmp_path):
    root = tmp_path / "lib"
    make_flac(root / "x.flac")
    # -n m with OUTDIR == INPUTDIR would overwrite the source: refused.
    run = run_flac2all("flac", "-n", "m", "-o", root, root)
    assert run.returncode == 1
    assert "it is the source itself" in run.rows()[0]["conversion_status"]
    assert decodes(root / "x.flac")
    ok = run_flac2all("opus", "-o", root, root)
    assert ok.returncode == 0 and (root / "opus" / "x.opus").is_file()
    again = run_flac2all("opus", "-o", root, root)
    assert len(again.rows()) == 1


@pytest.mark.slow
def test_threads_bounds_the_encoders_running(tmp_path, fake_bin):
    root = tmp_path / "in"
    files = max(6, default_threads() + 1)
    for i in range(files):
        make_flac(root / f"{i}.flac", seconds=0.2)
    running = tmp_path / "running"
    running.mkdir()
    seen = tmp_path / "seen"
    real = shutil.which("opusenc")
    path = fake_bin(
        "opusenc",
        f"""
touch {running}/$$
ls {running} | wc -l >> {seen}
sleep 0.5
rm {running}/$$
exec {real} "$@"
""",
    )
    # Without -t: one or two more than the CPUs, to fill the gaps between files.
    for threads, option in ((1, ["-t", "1"]), (3, ["-t", "3"]), (default_threads(), [])):
        seen.unlink(missing_ok=True)
        run = run_flac2all("opus", "-f", *option, "-o", tmp_path / "out", root, path_prefix=path)
        assert run.returncode == 0, run.stdout + run.stderr
        counts = [int(x) for x in seen.read_text().split()]
        assert len(counts) == files
        assert max(counts) == threads


@pytest.mark.slow
def test_encoder_options_reach_the_encoder(library, tmp_path, fake_bin):
    log = tmp_path / "argv"
    path = None
    for program in ("lame", "oggenc", "opusenc", "flac", "ffmpeg"):
        real = shutil.which(program)
        path = fake_bin(program, f'echo "{program} $*" >> {log}\nexec {real} "$@"\n')
    run = run_flac2all(
        "mp3,vorbis,opus,flac,aac,f:libopus",
        "-o",
        tmp_path / "out",
        library,
        "--lame-options=-preset extreme:q 2",
        "--vorbis-options=quality=5:resample 32000",
        "--opus-options=bitrate 96:vbr",
        "--flac-options=8:no-padding",
        "--aac-options=-b:a 160k",
        "--ffmpeg-options=-b:a 96k,-vbr on",
        path_prefix=path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = log.read_text().splitlines()
    assert any(line.startswith("lame --quiet --preset extreme -q 2 -") for line in lines)
    assert any(line.startswith("oggenc --quiet --quality=5 --resample 32000 --output") for line in lines)
    assert any(line.startswith("opusenc --quiet --bitrate 96 --vbr -") for line in lines)
    assert any(line.startswith("flac --silent -8 --no-padding --output-name") for line in lines)
    assert any("-c:a aac -b:a 160k -f ipod" in line for line in lines)
    assert any("-c:a libopus -b:a 96k -vbr on -f opus" in line for line in lines)
    assert int(stream(tmp_path / "out" / "vorbis" / "Album A" / "01 one.ogg")["sample_rate"]) == 32000


def test_option_splitting_follows_the_original():
    assert colon_options("-preset standard:q 0", always_one_dash=True) == ("--preset", "standard", "-q", "0")
    assert colon_options("quality=5:resample 32000") == ("--quality=5", "--resample", "32000")
    assert colon_options("8:-V:comment='a b'") == ("-8", "-V", "--comment=a b")
    assert colon_options("") == ()
    assert comma_options("-b:a 128k") == ("-b:a", "128k")
    assert comma_options("-b:a 160k,-cutoff 18000") == ("-b:a", "160k", "-cutoff", "18000")


# The options each family had before the codecs owned them: what a run
# without --X-options passes to the encoders.
DEFAULT_OPTIONS = {
    "lame": ("--preset", "standard", "-q", "0"),
    "vorbis": ("--quality=2",),
    "opus": ("--vbr",),
    "flac": (),
    "ffmpeg": ("-b:a", "128k"),
    "aac": ("-b:a", "192k"),
}


def test_every_family_parses_its_default_text_into_the_default_options():
    assert {name: family.defaults for name, family in codecs.OPTION_FAMILIES.items()} == DEFAULT_OPTIONS
    for name, family in codecs.OPTION_FAMILIES.items():
        assert family.name == name and family.flag == f"--{name}-options"


def test_each_codec_takes_its_family_and_its_defaults():
    modes = [*codecs.CODECS.values(), codecs.resolve("f:alac"), codecs.resolve("f:libopus")]
    families = {codec.name: codec.option_family for codec in modes}
    assert families == {
        "mp3": "lame",
        "vorbis": "vorbis",
        "opus": "opus",
        "aac": "aac",
        "flac": "flac",
        "test": None,
        "f:alac": "ffmpeg",
        "f:libopus": "ffmpeg",
    }
    for codec in modes:
        if codec.encoder_options is None:
            assert codec.default_options == ()
        else:
            # The registry's own record, so the CLI flag sets what the codec reads.
            assert codec.encoder_options is codecs.OPTION_FAMILIES[codec.option_family]
            assert codec.default_options == DEFAULT_OPTIONS[codec.option_family]


def test_help_lists_every_family_flag_with_its_default_and_syntax():
    run = run_flac2all("--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.split())  # argparse wraps at the terminal's width
    shown = {
        "lame": "'-preset standard:q 0'",
        "vorbis": "'quality=2'",
        "opus": "'vbr'",
        "flac": "none",
        "ffmpeg": "'-b:a 128k'",
        "aac": "'-b:a 192k'",
    }
    assert set(codecs.OPTION_FAMILIES) == set(shown)
    for name, family in codecs.OPTION_FAMILIES.items():
        assert f"{family.flag} OPTS {family.purpose} (default: {shown[name]})" in text
        # ...and the epilog names the flag with its syntax.
        assert " ".join(family.syntax.value.split()) in text
        assert text.count(family.flag) >= 2


def test_mode_list_shows_the_default_options_each_encoder_gets():
    lines = codecs.all_modes_help().splitlines()
    assert "  mp3      MP3 with lame (default options: --preset standard -q 0)" in lines
    assert "  vorbis   Ogg Vorbis with oggenc (default options: --quality=2)" in lines
    assert "  opus     Opus with opusenc (default options: --vbr)" in lines
    assert "  aac      AAC in .m4a with ffmpeg's native encoder (default options: -b:a 192k)" in lines
    flac = next(line for line in lines if line.startswith("  flac "))
    assert "default options" not in flac
    assert any(line.endswith("folder f_ENC (default options: -b:a 128k)") for line in lines)


def test_settings_hold_every_family_parsed_defaults_unless_given():
    parser = build_parser()
    settings, _ = settings_from(parser.parse_args(["mp3", "in"]))
    assert dict(settings.options) == DEFAULT_OPTIONS
    settings, _ = settings_from(parser.parse_args(["mp3", "in", "--opus-options=bitrate 96", "--flac-options", "8"]))
    assert dict(settings.options) == {**DEFAULT_OPTIONS, "opus": ("--bitrate", "96"), "flac": ("-8",)}
    with pytest.raises(UsageError, match="cannot parse encoder option"):
        settings_from(parser.parse_args(["mp3", "in", "--lame-options=V 'x"]))


def test_unparsable_options_are_a_usage_error_before_any_work(library, tmp_path):
    run = run_flac2all("aac", "-o", tmp_path / "out", library, "--aac-options=-b:a '160k")
    assert run.returncode == 2
    assert "cannot parse ffmpeg option" in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("family", "text", "words"),
    [
        ("lame", "-preset extreme:q 2", ("--preset", "extreme", "-q", "2")),
        ("lame", "V 2:-abr 128", ("-V", "2", "--abr", "128")),
        ("vorbis", "quality=5:resample 32000", ("--quality=5", "--resample", "32000")),
        ("vorbis", "q 6:-M 192", ("-q", "6", "-M", "192")),
        ("opus", "bitrate 96:vbr", ("--bitrate", "96", "--vbr")),
        ("opus", "comment 'TITLE=a b'", ("--comment", "TITLE=a b")),
        ("flac", "8:no-padding", ("-8", "--no-padding")),
        ("flac", "", ()),
        ("ffmpeg", "-b:a 96k,-vbr on", ("-b:a", "96k", "-vbr", "on")),
        ("ffmpeg", "-q:a 2", ("-q:a", "2")),
        ("aac", "-b:a 160k,-cutoff 18000", ("-b:a", "160k", "-cutoff", "18000")),
        ("aac", "", ()),
    ],
)
def test_each_family_parses_its_syntax(family, text, words):
    assert codecs.OPTION_FAMILIES[family].parse(text) == words


@pytest.mark.parametrize("family", sorted(codecs.OPTION_FAMILIES))
def test_each_family_refuses_text_it_cannot_split(family):
    with pytest.raises(UsageError, match="cannot parse"):
        codecs.OPTION_FAMILIES[family].parse("-b:a 'unclosed")


@pytest.mark.slow
def test_aliases_and_all(library, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("ogg,aacplus", "-o", out, library)
    assert run.returncode == 0
    assert "aacplus" in run.stderr  # the note about what aacplus means now
    assert {r["format"] for r in run.rows()} == {"vorbis", "aac"}
    everything = run_flac2all("all", "-o", tmp_path / "all", library)
    assert everything.returncode == 0
    assert {r["format"] for r in everything.rows()} == {"mp3", "vorbis", "opus", "aac", "flac", "test"}


def test_summary_has_the_documented_fields(library, tmp_path):
    run = run_flac2all("mp3,opus", "-o", tmp_path / "out", library)
    for field in (
        "Total files on input: 3",
        "Total files actually processed: 6",
        "Execution rate: 100.00%",
        "Files we managed to convert successfully: 6",
        "Files we failed to convert due to errors: 0",
        "Conversion error rate: 0.00%",
        "For mode: mp3",
        "Mean execution time",
        "Median execution time",
        "Log written to: ",
    ):
        assert field in run.stdout
    skipped = run_flac2all("mp3,opus", "-o", tmp_path / "out", library)
    assert "    nothing to do: 6 outputs up to date (checked in " in skipped.stdout
    assert "No data" not in skipped.stdout and "Execution rate" not in skipped.stdout


def test_plain_progress_lines_when_not_a_terminal(library, tmp_path):
    run = run_flac2all("opus", "-o", tmp_path / "out", library)
    ok_lines = [line for line in run.stdout.splitlines() if line.startswith("encoded ")]
    assert len(ok_lines) == 3


def test_plain_lines_name_paths_below_inputdir_and_outdir_and_the_log_whole(library, tmp_path):
    out = tmp_path / "out"
    (library / "bad.flac").write_bytes(b"not FLAC")
    run = run_flac2all("opus", "-o", out, library)
    assert "encoded  opus     Album A/01 one.flac -> opus/Album A/01 one.opus" in run.stdout.splitlines()
    assert "FAILED   opus     bad.flac: not a FLAC file (no fLaC header)" in run.stdout.splitlines()
    assert run.stderr.splitlines() == [f"FAILED   opus     {library / 'bad.flac'}: not a FLAC file (no fLaC header)"]
    assert str(tmp_path) not in "".join(line for line in run.stdout.splitlines() if line[:1] != " ")
    assert {r["infile"] for r in run.rows()} >= {str(library / "Album A" / "01 one.flac")}
    again = run_flac2all("opus", "-o", out, library)
    assert "skipped  opus     opus/Album B/03 three.opus (up to date)" in again.stdout.splitlines()


def test_csv_log_counts_match(library, tmp_path):
    run = run_flac2all("mp3,opus,flac", "-o", tmp_path / "out", library)
    rows = read_log(tmp_path / "out")
    assert len(rows) == 9 and run.returncode == 0
    assert Path(rows[0]["outfile"]).suffix in (".mp3", ".opus", ".flac")


def test_second_run_on_the_same_outdir_refuses_to_start(library, tmp_path):
    out = tmp_path / "out"
    (out / ".flac2all").mkdir(parents=True)
    with open(out / ".flac2all" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running flac2all holds it
        run = run_flac2all("opus", "-o", out, library)
    assert run.returncode == 2
    assert "another flac2all run is writing into" in run.stderr
    assert not (out / "opus").exists()


def test_unreadable_folder_is_reported(library, tmp_path):
    (library / "locked").mkdir()
    make_flac(library / "locked" / "x.flac")
    (library / "locked").chmod(0)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "flac2all", "opus", "-o", str(out), str(library)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    (library / "locked").chmod(0o755)
    assert proc.returncode == 1
    rows = read_log(out)
    locked = [r for r in rows if r["infile"] == str(library / "locked")]
    assert locked == [
        {
            "infile": str(library / "locked"),
            "outfile": "",
            "format": "-",
            "conversion_status": "ERROR: cannot read folder: Permission denied",
            "return_code": "1",
            "execution_time": "-1.000",  # nothing ran
            "host": socket.gethostname(),
        }
    ]
    assert sum(r["conversion_status"] == "SUCCESS" for r in rows) == 3


@pytest.fixture
def counted(monkeypatch):
    """How many argument parsers a run builds and how many parses it makes
    (argparse's own methods, wrapped: every parser of the run is seen)."""
    seen = {"built": 0, "parsed": 0}
    build, parse = argparse.ArgumentParser.__init__, argparse.ArgumentParser.parse_known_args

    def built(self, *args, **kwargs):
        seen["built"] += 1
        build(self, *args, **kwargs)

    def parsed(self, *args, **kwargs):
        seen["parsed"] += 1
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", built)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parsed)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield seen
    for signum, handler in handlers.items():  # main() installs its own
        signal.signal(signum, handler)


def test_argv_is_parsed_once_by_one_parser_for_several_profiles(library, tmp_path, counted, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[profile.a]\nmodes = ["mp3"]\ninput = "{library}"\noutdir = "out-a"\nthreads = 2\n'
        f'[profile.b]\nmodes = ["opus"]\ninput = "{library}"\noutdir = "out-b"\n'
    )
    assert cli.main(["--config", str(cfg), "--all-profiles", "--dry-run", "-t", "1", "-q"]) == 0
    assert counted == {"built": 1, "parsed": 1}
    out = capsys.readouterr().out
    assert out.count("dry run: nothing changed") == 2 and "encode  3" in out
    assert not (tmp_path / "out-a").exists()
    counted.update(built=0, parsed=0)
    assert cli.main(["mp3", str(library), "-o", str(tmp_path / "o"), "--dry-run"]) == 0
    assert counted == {"built": 1, "parsed": 1}


def test_the_option_table_is_what_profiles_and_suggestions_read():
    parser = build_parser()
    flags = {flag for option in parser.options.values() for flag in option.flags}
    text = parser.format_help()
    assert all(flag in text for flag in flags)
    assert {"--outdir", "--id3v2.3", "--lame-options", "--names", "--on-done", "--help"} <= flags
    keys = config.profile_keys(parser.options)
    assert {"modes", "input", "outdir", "id3v2.3", "lame-options", "art-max-size", "threads"} <= set(keys)
    assert not {"profile", "config", "cluster-keygen", "worker", "help", "version"} & set(keys)
    assert keys["threads"].default == default_threads() and keys["nodirs"].choices == ("d", "m")
    # An option added behind the table's back is neither a key nor suggested.
    parser.add_argument("--sneaky")
    assert "sneaky" not in config.profile_keys(parser.options)
    assert parser.suggest_options(["--sneaki"]) == ""
    assert parser.suggest_options(["--outdri"]) == " (did you mean --outdir?)"
    package = Path(cli.__file__).parents[1]
    assert not [p for p in package.rglob("*.py") if "._actions" in p.read_text()]


def test_a_parse_gives_only_what_the_command_line_says(tmp_path):
    parser = build_parser()
    given = parser.parse_given(["mp3", "-o", "out", "in", "--names", "fat32"])
    assert vars(given) == {"mode": "mp3", "outdir": "out", "inputdir": "in", "names": "fat32"}  # INPUTDIR after -o
    assert vars(parser.parse_given(["--profile", "car", "opus"])) == {"profile": ["car"], "mode": "opus"}
    full = parser.parse_args(["mp3", "in"])
    assert (full.outdir, full.names, full.force, full.port, full.profile) == ("./", "posix", False, 2019, None)


def test_the_request_holds_the_run_as_data_and_master_from_takes_it(library, tmp_path):
    def request(*argv):
        [(name, args)] = config.runs(build_parser().options, build_parser().parse_given(list(argv)))
        return config.request_from(name, args)

    keys = tmp_path / "keys"
    line = ["mp3", str(library), "-o", str(tmp_path / "out"), "-m", "--keys", str(keys), "--bind", "127.0.0.1"]
    req = request(*line, "--port", "2020", "--max-slots", "3", "--wait-workers", "5", "-q", "--plan-json", "p.json")
    assert req.executor == MasterOptions("127.0.0.1", 2020, keys, False, 5.0, 3)
    assert (req.display, req.dry_run, req.plan_json) == (DisplayOptions(quiet=True), False, Path("p.json"))
    assert not [value for value in walk(req) if isinstance(value, argparse.Namespace)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.dry_run = True  # type: ignore[misc]
    said = []
    master = setup.master_from(req.executor, req.settings, said.append)
    assert (master.bind, master.port, master.max_slots, master.wait_workers) == ("127.0.0.1", 2020, 3, 5.0)
    assert master.keys is not None and (keys / "authorized").is_dir() and said[0].startswith("Made the cluster's keys")
    insecure = request(*line, "--insecure")
    master = setup.master_from(insecure.executor, insecure.settings, said.append)
    assert master.keys is None and f"--insecure --allow {library}" in master.start_hint
    assert "--map MASTER_PATH=ITS_PATH" in master.start_hint  # a node that mounts the folders elsewhere
    with pytest.raises(UsageError, match="--port 70000: not a port number"):
        setup.master_from(dataclasses.replace(insecure.executor, port=70000), insecure.settings, said.append)
    dask = request("mp3", str(library), "--dask-jobqueue", "slurm", "--dask-cores", "2")
    assert dask.executor == DaskOptions(jobqueue="slurm", cores=2)
    assert request("mp3", str(library)).executor is None  # this machine's cores
    with pytest.raises(UsageError, match="choose one of -m, --dask"):
        request("mp3", str(library), "-m", "--dask", "tcp://127.0.0.1:9")


def walk(value):
    """Every value inside a tree of dataclasses, tuples and mappings."""
    yield value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from walk(getattr(value, f.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from walk(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from walk(item)


def test_a_row_that_ran_nothing_logs_minus_one_seconds(library, tmp_path):
    # -n d puts two sources named alike on one output: the second is refused
    # before anything runs; the log says -1 for it, as for a skip.
    make_flac(library / "Album B" / "01 one.flac", seconds=0.1)
    run = run_flac2all("mp3", "-n", "d", "-o", tmp_path / "out", library)
    assert run.returncode == 1
    times = {r["conversion_status"].split(":")[0]: r["execution_time"] for r in run.rows()}
    assert times["ERROR"] == "-1.000" and float(times["SUCCESS"]) >= 0
    assert "Mean execution time: -" not in run.stdout


def test_a_scaled_cover_and_a_playlist_are_counted_under_their_lines_verbs(library, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(library / "Album A" / "cover.jpg")
    (library / "Album A" / "a.m3u").write_text("01 one.flac\n")
    run = run_flac2all("mp3", "-c", "--art-max-size", "16", "--playlists", "-o", tmp_path / "out", library)
    assert run.returncode == 0, run.stderr
    assert "converted mp3      " in run.stdout and "(scaled to 16x16)" in run.stdout
    assert "written  mp3      " in run.stdout and "scaled " not in run.stdout.replace("(scaled to", "")
    assert "3 encoded, 1 converted, 0 retagged, 0 moved, 0 copied, 1 playlist written, 0 skipped" in run.stdout


def test_a_damaged_source_is_named_for_its_cause_once_for_all_its_modes(tmp_path):
    root, out = tmp_path / "music", tmp_path / "out"
    whole = make_flac(tmp_path / "whole.flac", seconds=3).read_bytes()
    root.mkdir()
    (root / "cut.flac").write_bytes(whole[: len(whole) * 6 // 10])
    run = run_flac2all("mp3,opus", "-o", out, root)
    assert run.returncode == 1
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].split()[1] in ("mp3,opus", "opus,mp3"), run.stdout
    cause = r"cut\.flac: truncated FLAC: its audio ends at 1\.\d s, not at 3\.0 s as its header says"
    assert re.search(cause, failed[0]), failed
    assert len(run.stderr.splitlines()) == 1 and "truncated FLAC" in run.stderr
    assert f"{root / 'cut.flac'} [mp3, opus]: truncated FLAC" in run.stdout
    assert [r["conversion_status"].startswith("ERROR: truncated FLAC") for r in run.rows()] == [True, True]


def test_quiet_master_prints_its_one_line_and_only_warnings_on_stderr(library, tmp_path):
    """-q is for cron: the master's own lines (listening, the start hint,
    workers coming) are not printed, only the run's one line; what went
    wrong (here the --insecure warning) still is, on stderr."""
    from tests.cluster.processes import env_with, free_port, start_worker

    port = free_port()
    argv = [sys.executable, "-m", "flac2all", "mp3", "-m", "-q", "--insecure", "--bind", "127.0.0.1"]
    argv += ["--port", str(port), "-o", str(tmp_path / "out"), str(library)]
    master = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with(None))
    try:
        worker = start_worker(port, 1)
        stdout, stderr = master.communicate(timeout=90)
        assert worker.wait(30) == 0, worker.output
    finally:
        master.kill()
    assert (master.returncode, stdout) == (0, "3 encoded\n"), stdout + stderr
    assert stderr.startswith("WARNING: --insecure: the cluster is unauthenticated"), stderr
    assert "Listening" not in stderr and "Got " not in stderr and "Commencing" not in stderr


def test_control_characters_in_an_error_are_escaped(tmp_path):
    """A path or a hook named with an ESC sequence or a carriage return,
    in the one line of an error: escaped, as in every other line."""
    missing = tmp_path / "gone\x1b[31m\rX"
    run = run_flac2all("mp3", missing, "-o", tmp_path / "out", timeout=30)
    assert run.returncode == 2 and "gone\\x1b[31m\\x0dX does not exist" in run.stderr, run.stderr
    library = tmp_path / "in"
    make_flac(library / "a.flac", seconds=0.1)
    hook = run_flac2all("mp3", library, "-o", tmp_path / "out", "-q", "--on-done", "false\x1b[31m", timeout=60)
    assert hook.returncode == 1 and "--on-done false\\x1b[31m: cannot run it" in hook.stderr, hook.stderr
    assert "\x1b" not in run.stderr + hook.stderr
