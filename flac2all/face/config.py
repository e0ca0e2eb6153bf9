"""Device profiles: ``[profile.NAME]`` tables of a TOML file -> the same
Request the command line builds.

A profile key is a command-line option's long name without its dashes
(``lame-options``, ``delete``, ``names``, ``"id3v2.3"``), and ``modes`` and
``input`` stand for MODE and INPUTDIR: the parser's table of options
(``usage.Parser.options``) says which keys there are, their types and
choices. The options of a run are three layers: the table's defaults, then
the profile's values, then the options given on the command line (its one
parse); ``request_from`` turns the result into one Request (its Settings
by ``settings_from``), for a plain command line as for a profile. Every key
of every profile is checked when the file is read, before any work: an
unknown key or a bad value is a ConfigError naming the file, the line and
the key.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flac2all import codecs
from flac2all.audio import loudness
from flac2all.errors import TaskError, UsageError
from flac2all.face.usage import Option, Parser, defaults
from flac2all.face.values import command, path_limit, positive_float, positive_int, seconds, thread_count
from flac2all.model import (
    STDOUT,
    AlbumBy,
    DaskOptions,
    DisplayOptions,
    Layout,
    Lossy,
    MasterOptions,
    Names,
    OpusGain,
    ReplayGain,
    Request,
    Settings,
    WatchOptions,
)
from flac2all.planning.hashes import settings_hash
from flac2all.tags.source import open_regular

# Options that are about choosing profiles, not keys of one.
NOT_KEYS = {"help", "version", "cluster_keygen", "worker", "config", "profile", "all_profiles"}
# Keys that name MODE and INPUTDIR.
POSITIONAL_KEYS = {"mode": "modes", "inputdir": "input"}
# Keys holding a path: '~' is the user's home (on the command line too, where
# the shell leaves it in --outdir=~/x), and a relative path in a profile is
# taken from the config file's folder (cron runs elsewhere).
PATH_DESTS = {"inputdir", "outdir", "plan_json", "keys", "dask_scheduler_file"}
# A profiles file larger than this is not one.
MAX_CONFIG = 1024 * 1024

PROFILE_HELP = """\
device profiles:
  A TOML file (default ~/.config/flac2all/config.toml, or --config FILE) holds
  one [profile.NAME] table per device; 'flac2all --profile NAME' runs one,
  '--profile A --profile B' or '--all-profiles' several in turn. A key is an
  option's long name without dashes, plus 'modes' and 'input' for MODE and
  INPUTDIR; options given on the command line override the profile's:
    [profile.car]
    modes = ["mp3"]
    input = "/srv/music"
    outdir = "/media/usb"
    lame-options = "V 2"
    names = "fat32"
    art-max-size = 500
    lossy = "copy"
    playlists = true
    delete = true
    watch = true   # with --watch or here: one process follows every such profile
"""


class ConfigError(UsageError):
    """A config file that cannot be used, naming the file, line and key."""

    def __init__(self, path: Path, message: str, line: int | None = None, where: str = "") -> None:
        place = f"{path}, line {line}" if line else f"{path}"
        super().__init__(f"{place}: {where}{': ' if where else ''}{message}")


def add_profile_options(p: Parser) -> None:
    """The options of device profiles (each one also a profile key)."""
    g = p.group("device profiles (see below; each option is also a profile key)")
    g.option("--config", metavar="FILE", help="the profiles' file (default: ~/.config/flac2all/config.toml)")
    g.option("--profile", action="append", metavar="NAME", help="run profile NAME (repeat for several, in turn)")
    g.option("--all-profiles", action="store_true", help="run every profile of the file, in turn")
    g.option(
        "--names",
        choices=[n.value for n in Names],
        default=Names.POSIX.value,
        help="'fat32': output names FAT32/exFAT/Windows accept (characters replaced, reserved names avoided, "
        "lengths kept within limits, clashes numbered); 'posix' (default): names as they are",
    )
    g.option(
        "--max-path",
        type=path_limit,
        default=255,
        metavar="N",
        help="with --names fat32: the longest path below OUTDIR, in UTF-16 units (default 255)",
    )
    g.option(
        "--lossy",
        choices=[mode.value for mode in Lossy],
        help="the mp3/m4a/aac/ogg/opus/wma files of INPUTDIR: 'copy' them into each mode's tree, 'convert' "
        "them into each mode of another format (copied into the others), or 'skip' them (default: like any "
        "other file, copied with -c)",
    )
    g.option(
        "--max-bitrate", type=positive_int, metavar="KBPS", help="re-encode lossy files above this bitrate (kbit/s)"
    )
    g.option(
        "--art-max-size",
        type=positive_int,
        metavar="PIXELS",
        help="scale embedded and copied covers down to this longest side (JPEG; never up)",
    )
    g.option(
        "--playlists",
        action="store_true",
        help="write the .m3u/.m3u8 playlists of INPUTDIR into each mode's tree, pointing at the outputs",
    )
    g.option(
        "--on-done",
        type=command,
        metavar="CMD",
        help="run CMD once at the end, with the summary as JSON on its standard input (split into words as a "
        "shell would, but no shell runs it: sh -c '...' for pipes and redirections)",
    )


def settings_from(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """The Settings of a parsed command line (or of a profile merged with
    one: ``merged``), and the notes to show about its modes."""
    selected, notes = codecs.parse_modes(args.mode)
    options = {name: family.parse(getattr(args, family.dest)) for name, family in codecs.OPTION_FAMILIES.items()}
    settings = Settings(
        input_dir=Path(os.path.abspath(args.inputdir)),
        outdir=Path(os.path.abspath(args.outdir)),
        modes=tuple(c.name for c in selected),
        force=args.force,
        threads=args.threads,
        layout=Layout(args.nodirs) if args.nodirs else Layout.TREE,
        copy=args.copy,
        options=options,
        timeout=args.timeout,
        id3v23=args.id3v23,
        embed_folder_art=args.embed_folder_art,
        replaygain=ReplayGain(args.replaygain),
        opus_gain=OpusGain(args.opus_gain),
        album_by=AlbumBy(args.album_by),
        delete=args.delete or args.delete_anyway,  # --delete-anyway says --delete too
        delete_anyway=args.delete_anyway,
        allow_empty=args.allow_empty,
        allow_missing_sources=args.allow_missing_sources,
        shared_decode=not args.decode_per_mode,
        names=Names(args.names),
        max_path=args.max_path,
        lossy=Lossy(args.lossy) if args.lossy else None,
        max_bitrate=args.max_bitrate,
        art_max_size=args.art_max_size,
        playlists=args.playlists,
        include=tuple(args.include or ()),
        exclude=tuple(args.exclude or ()),
        query=tuple(args.query or ()),
        path_format=args.path_format,
        # Split by default, in a cluster run as in a local one (a job carries its tracks).
        cue=args.cue or "split",
        cue_encoding=args.cue_encoding,
    )
    if settings.replaygain.measures and not loudness.available():
        raise UsageError(f"--replaygain {settings.replaygain.value}: {loudness.EXTRA}")
    return settings, notes


# The names of descriptor 1 a --plan-json FILE may give: standard output, as '-'.
STDOUT_NAMES = frozenset(("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "/proc/thread-self/fd/1"))


def plan_path(text: str | Path) -> Path:
    """--plan-json's FILE: '-', or a name of descriptor 1 however spelt
    (``/dev/stdout``, ``../../dev/stdout``), is standard output (STDOUT),
    with all that goes with it (what the run prints goes to stderr); any
    other spelling of a file named '-' (``./-``) is that file."""
    path = Path(text)
    if os.fspath(text) == "-" or os.path.normpath(path.absolute()) in STDOUT_NAMES:
        return STDOUT
    return path.absolute() if path == STDOUT else path


def request_from(name: str | None, args: argparse.Namespace) -> Request:
    """The Request of one run (the command line alone, or profile ``name``
    merged with it): what runs below the face is given, as data."""
    settings, notes = settings_from(args)
    return Request(
        settings,
        executor=executor_from(args),
        display=DisplayOptions(dashboard=args.curses, quiet=args.quiet),
        dry_run=args.dry_run,
        plan_json=plan_path(args.plan_json) if args.plan_json else None,
        profile=name,
        notes=tuple(notes),
        on_done=args.on_done,
        verbose=args.verbose,
        stop_on_hangup=args.stop_on_hangup,
        watch=watch_from(args),
    )


def watch_from(args: argparse.Namespace) -> WatchOptions | None:
    """--watch's options, or None: one run. Refused where a run that goes on
    cannot be: with --dry-run or --plan-json (one plan, of one run), or
    without the watchdog package."""
    if not args.watch:
        return None
    for given, flag in ((args.dry_run, "--dry-run"), (args.plan_json, "--plan-json")):
        if given:
            raise UsageError(f"--watch follows the library with real runs: it cannot be used with {flag}")
    try:
        import watchdog.observers  # noqa: F401
    except ImportError:
        raise UsageError(
            "--watch needs the watchdog package, to see the library's changes: pip install 'flac2all[watch]'"
        ) from None
    return WatchOptions(settle=args.settle, rescan_every=args.rescan_every)


def check_shared_outdirs(requests: Sequence[Request]) -> None:
    """Refuse two runs of one command (profiles) that write into one OUTDIR
    but disagree on what belongs there: another input (each run would take
    the other's outputs for orphans), or a mode made with other options
    (each run would re-encode the other's outputs, every time). A folder
    named through a link is that folder."""
    for n, first in enumerate(requests):
        for second in requests[n + 1 :]:
            a, b = first.settings, second.settings
            if os.path.realpath(a.outdir) != os.path.realpath(b.outdir):
                continue
            if os.path.realpath(a.input_dir) != os.path.realpath(b.input_dir):
                why = f"from different inputs ({a.input_dir} and {b.input_dir})"
            else:
                both = [m for m in a.modes if m in b.modes]
                shaped = [m for m in both if output_hash(m, a) != output_hash(m, b)]
                if shaped:
                    why = f"in mode {', '.join(shaped)} with different encoder options"
                elif both and chosen(a) != chosen(b):
                    why = f"in mode {', '.join(both)} with different selections or path formats"
                else:
                    continue
            raise UsageError(
                f"profiles {first.profile} and {second.profile} both write into {a.outdir} {why}: each run would"
                " undo the other's outputs; give them different outdirs"
            )


def chosen(settings: Settings) -> tuple:
    """What a run takes of its input and where it puts it (a CUE album
    whole or split): two runs into one mode's folder that differ here
    orphan (or move) each other's outputs."""
    return settings.include, settings.exclude, settings.query, settings.path_format, settings.cue


def output_hash(mode: str, settings: Settings) -> str:
    """What shapes a mode's outputs under ``settings`` (the state's settings
    hash, without the encoders' versions: the same for both runs)."""
    return settings_hash(codecs.resolve(mode), settings, {})


def executor_from(args: argparse.Namespace) -> MasterOptions | DaskOptions | None:
    """Where the jobs run: the cluster master of -m, a Dask cluster, or
    (None) this machine's cores."""
    dask = (args.dask, args.dask_scheduler_file, args.dask_jobqueue)
    if sum(map(bool, (args.master, *dask))) > 1:
        raise UsageError("choose one of -m, --dask, --dask-scheduler-file and --dask-jobqueue")
    if args.master:
        return MasterOptions(args.bind, args.port, args.keys, args.insecure, args.wait_workers, args.max_slots)
    if any(dask):
        return DaskOptions(*dask, args.dask_jobs, args.dask_cores, args.dask_memory)
    return None


def check_cluster(settings: Settings) -> None:
    """Refuse what cluster workers cannot do yet: the options model.Settings
    marks ``not_sent`` (workers take copies under their own names only,
    know no conversion of lossy files, and are not sent the art options)."""
    used = settings.not_sent_in_use()
    if used:
        raise UsageError(f"{', '.join(used)}: not available with -m/--master yet (run it without -m)")


def default_config() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "flac2all" / "config.toml"


def profile_keys(options: Mapping[str, Option]) -> dict[str, Option]:
    """Profile key -> the option it stands for (from the parser's table)."""
    keys = {}
    for option in options.values():
        if option.dest in NOT_KEYS:
            continue
        if not option.flags:
            keys[POSITIONAL_KEYS[option.dest]] = option
            continue
        longest = max(option.flags, key=len)
        keys[longest.lstrip("-")] = option
    return keys


@dataclass(frozen=True)
class Profile:
    name: str
    values: dict[str, Any]  # option dest -> value, checked
    line: int | None  # of its table's header


def load(path: Path, options: Mapping[str, Option]) -> dict[str, Profile]:
    """Every profile of the file, each key checked; ConfigError otherwise."""
    try:
        # A regular file only, and a bounded read: --config /dev/zero or a
        # FIFO is refused, never read.
        with open_regular(path) as f:
            data = f.read(MAX_CONFIG + 1)
        if len(data) > MAX_CONFIG:
            raise ConfigError(path, f"cannot read it: larger than {MAX_CONFIG // 1024} KiB (not a profiles file?)")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "no such file (write the profiles there, or name the file with --config)") from None
    except (OSError, UnicodeDecodeError, TaskError) as exc:
        raise ConfigError(path, f"cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    for key in data:
        if key != "profile":
            raise ConfigError(path, "unknown key (profiles are [profile.NAME] tables)", key_line(text, [key]), key)
    tables = data.get("profile", {})
    if not isinstance(tables, dict):
        raise ConfigError(path, "must be a table of [profile.NAME] tables", key_line(text, ["profile"]), "profile")
    keys = profile_keys(options)
    profiles = {}
    for name, table in tables.items():
        where = ["profile", name]
        if not isinstance(table, dict):
            raise ConfigError(path, "must be a table of options", key_line(text, where), f"profile.{name}")
        values = {}
        for key, value in table.items():
            line = key_line(text, [*where, key])
            option = keys.get(key)
            if option is None:
                near = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise ConfigError(path, f"unknown key{hint}", line, f"[profile.{name}] {key}")
            try:
                values[option.dest] = checked(option, value, path.parent)
            except (argparse.ArgumentTypeError, UsageError, ValueError) as exc:
                raise ConfigError(path, str(exc), line, f"[profile.{name}] {key}") from None
        profiles[name] = Profile(name, values, key_line(text, where))
    return profiles


def checked(option: Option, value: Any, base: Path) -> Any:
    """A profile's value for ``option``, as argparse would store it."""
    if option.action == "store_true":  # a flag: --delete
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if option.dest == "mode":
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not isinstance(value, str):
            raise ValueError('must be a list of modes, as ["mp3", "opus"]')
        codecs.parse_modes(value)
        return value
    if option.action == "append":  # a string, or a list of them: one each
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError('must be a string or a list of strings, as ["a", "b"]')
        return [option.type(v) if callable(option.type) else v for v in value]
    if option.type in (int, positive_int, positive_float, path_limit, thread_count, seconds):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return option.type(str(value))
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if option.choices is not None and value not in option.choices:
        raise ValueError(f"must be one of: {', '.join(map(str, option.choices))}")
    if option.dest in PATH_DESTS and value != "-":  # ("-": standard output, --plan-json)
        value = os.fspath(base / Path(value).expanduser())
    for family in codecs.OPTION_FAMILIES.values():
        if option.dest == family.dest:
            family.parse(value)
    return option.type(value) if callable(option.type) else value


HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
ASSIGNMENT = re.compile(r"""^\s*((?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_\-.\s])+?)\s*=""")


def dotted(text: str) -> list[str]:
    """A TOML dotted key (``profile."my car"``) as its parts."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s"\']+)', text)
    return [a or b or c for a, b, c in parts]


def key_line(text: str, key: list[str]) -> int | None:
    """The line where ``key`` (its full dotted path) is set in ``text``, or
    that of its table's header; None when neither is found (tomllib says no
    line of a key, so the text is read again for it)."""
    table: list[str] = []
    header = None
    for number, line in enumerate(text.splitlines(), 1):
        if m := HEADER.match(line):
            table = dotted(m.group(1))
            if table == key:
                return number
            if table == key[:-1]:
                header = number
        elif (m := ASSIGNMENT.match(line)) and table + dotted(m.group(1)) == key:
            return number
    return header


def merged(options: Mapping[str, Option], profile: dict[str, Any], given: argparse.Namespace) -> argparse.Namespace:
    """Defaults, then the profile's values, then the command line's; '~'
    in a path is the user's home."""
    values = {**defaults(options), **profile, **vars(given)}
    for dest in PATH_DESTS:
        if isinstance(values.get(dest), str | Path):
            values[dest] = type(values[dest])(os.path.expanduser(values[dest]))
    return argparse.Namespace(**values)


def runs(options: Mapping[str, Option], given: argparse.Namespace) -> list[tuple[str | None, argparse.Namespace]]:
    """(profile name or None, options) of each run the command line asks
    for: itself, or each profile it names, in turn. ``options``: the
    parser's table; ``given``: what the command line gives (its one parse)."""
    asked = getattr(given, "profile", None)
    every = getattr(given, "all_profiles", False)
    config = getattr(given, "config", None)
    if not (asked or every):
        if config:
            raise UsageError("--config names the profiles' file: add --profile NAME or --all-profiles")
        return [(None, merged(options, {}, given))]
    path = Path(config).expanduser() if config else default_config()
    profiles = load(path, options)
    names = list(profiles) if every else list(dict.fromkeys(asked))
    if not names:
        raise ConfigError(path, "holds no [profile.NAME] table")
    out = []
    for name in names:
        if name not in profiles:
            known = ", ".join(profiles) or "none"
            raise ConfigError(path, f"no profile {name!r} (its profiles: {known})")
        ns = merged(options, profiles[name].values, given)
        for dest, key in POSITIONAL_KEYS.items():
            if getattr(ns, dest) is None:
                where = f"[profile.{name}]"
                raise ConfigError(path, f"no '{key}' (nor on the command line)", profiles[name].line, where)
        out.append((name, ns))
    return out
