"""Device profiles: ``[profile.NAME]`` tables of a TOML file -> the same
Settings the command line builds.

A profile key is a command-line option's long name without its dashes
(``lame-options``, ``delete``, ``names``, ``"id3v2.3"``), and ``modes`` and
``input`` stand for MODE and INPUTDIR. The options of a run are three
layers: the parser's defaults, then the profile's values, then the options
given on the command line (``given``); ``settings_from`` turns the result
into Settings, for a plain command line as for a profile. Every key of every
profile is checked when the file is read, before any work: an unknown key
or a bad value is a ConfigError naming the file, the line and the key.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flac2all import codecs
from flac2all.errors import UsageError
from flac2all.model import Layout, Lossy, Names, Settings

# Options that are about choosing profiles, not keys of one.
NOT_KEYS = {"help", "version", "cluster_keygen", "config", "profile", "all_profiles"}
# Keys that name MODE and INPUTDIR.
POSITIONAL_KEYS = {"mode": "modes", "inputdir": "input"}
# Keys holding a path: '~' is the user's home, and a relative path is taken
# from the config file's folder (cron runs elsewhere).
PATH_DESTS = {"inputdir", "outdir", "plan_json", "keys"}

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
"""


class ConfigError(UsageError):
    """A config file that cannot be used, naming the file, line and key."""

    def __init__(self, path: Path, message: str, line: int | None = None, where: str = "") -> None:
        place = f"{path}, line {line}" if line else f"{path}"
        super().__init__(f"{place}: {where}{': ' if where else ''}{message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def command(text: str) -> str:
    """An --on-done command: split like a shell would (no shell runs it)."""
    try:
        if not shlex.split(text):
            raise argparse.ArgumentTypeError("an empty command")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    return text


def add_profile_options(p: argparse.ArgumentParser) -> None:
    """The options of device profiles (each one also a profile key)."""
    g = p.add_argument_group("device profiles (see below; each option is also a profile key)")
    g.add_argument("--config", metavar="FILE", help="the profiles' file (default: ~/.config/flac2all/config.toml)")
    g.add_argument("--profile", action="append", metavar="NAME", help="run profile NAME (repeat for several, in turn)")
    g.add_argument("--all-profiles", action="store_true", help="run every profile of the file, in turn")
    g.add_argument(
        "--names",
        choices=[n.value for n in Names],
        default=Names.POSIX.value,
        help="'fat32': output names FAT32/exFAT/Windows accept (characters replaced, reserved names avoided, "
        "lengths kept within limits, clashes numbered); 'posix' (default): names as they are",
    )
    g.add_argument(
        "--max-path",
        type=positive_int,
        default=255,
        metavar="N",
        help="with --names fat32: the longest path below OUTDIR, in UTF-16 units (default 255)",
    )
    g.add_argument(
        "--lossy",
        choices=[mode.value for mode in Lossy],
        help="the mp3/m4a/aac/ogg/opus/wma files of INPUTDIR: 'copy' them into each mode's tree, 'convert' "
        "them into each mode of another format (copied into the others), or 'skip' them (default: like any "
        "other file, copied with -c)",
    )
    g.add_argument(
        "--max-bitrate", type=positive_int, metavar="KBPS", help="re-encode lossy files above this bitrate (kbit/s)"
    )
    g.add_argument(
        "--art-max-size",
        type=positive_int,
        metavar="PIXELS",
        help="scale embedded and copied covers down to this longest side (JPEG; never up)",
    )
    g.add_argument(
        "--playlists",
        action="store_true",
        help="write the .m3u/.m3u8 playlists of INPUTDIR into each mode's tree, pointing at the outputs",
    )
    g.add_argument(
        "--on-done",
        type=command,
        metavar="CMD",
        help="run CMD once at the end, with the summary as JSON on its standard input",
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
        delete=args.delete,
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
    )
    return settings, notes


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


def profile_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Profile key -> the option it stands for."""
    keys = {}
    for action in parser._actions:
        if action.dest in NOT_KEYS:
            continue
        if not action.option_strings:
            keys[POSITIONAL_KEYS[action.dest]] = action
            continue
        longest = max(action.option_strings, key=len)
        keys[longest.lstrip("-")] = action
    return keys


@dataclass(frozen=True)
class Profile:
    name: str
    values: dict[str, Any]  # option dest -> value, checked
    line: int | None  # of its table's header


def load(path: Path, parser: argparse.ArgumentParser) -> dict[str, Profile]:
    """Every profile of the file, each key checked; ConfigError otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "no such file (write the profiles there, or name the file with --config)") from None
    except (OSError, UnicodeDecodeError) as exc:
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
    keys = profile_keys(parser)
    profiles = {}
    for name, table in tables.items():
        where = ["profile", name]
        if not isinstance(table, dict):
            raise ConfigError(path, "must be a table of options", key_line(text, where), f"profile.{name}")
        values = {}
        for key, value in table.items():
            line = key_line(text, [*where, key])
            action = keys.get(key)
            if action is None:
                near = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise ConfigError(path, f"unknown key{hint}", line, f"[profile.{name}] {key}")
            try:
                values[action.dest] = checked(action, value, path.parent)
            except (argparse.ArgumentTypeError, UsageError, ValueError) as exc:
                raise ConfigError(path, str(exc), line, f"[profile.{name}] {key}") from None
        profiles[name] = Profile(name, values, key_line(text, where))
    return profiles


def checked(action: argparse.Action, value: Any, base: Path) -> Any:
    """A profile's value for ``action``, as argparse would store it."""
    if action.nargs == 0:  # a flag: --delete
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if action.dest == "mode":
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not isinstance(value, str):
            raise ValueError('must be a list of modes, as ["mp3", "opus"]')
        codecs.parse_modes(value)
        return value
    if action.type in (int, positive_int, positive_float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return action.type(str(value))
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"must be one of: {', '.join(map(str, action.choices))}")
    if action.dest in PATH_DESTS:
        value = os.fspath(base / Path(value).expanduser())
    for family in codecs.OPTION_FAMILIES.values():
        if action.dest == family.dest:
            family.parse(value)
    return action.type(value) if callable(action.type) else value


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


def profiles_asked(argv: Sequence[str]) -> bool:
    """Whether the command line names profiles (then MODE and INPUTDIR may
    be left out)."""
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    p.add_argument("--profile", action="append")
    p.add_argument("--all-profiles", action="store_true")
    try:
        known, _ = p.parse_known_args(argv)
    except argparse.ArgumentError:
        return True  # "--profile" without its NAME: the real parser says so
    return bool(known.profile or known.all_profiles)


def given_options(make_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]) -> argparse.Namespace:
    """Only the options given on the command line (nothing from defaults)."""
    parser = make_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return parser.parse_args(argv)


def merged(parser: argparse.ArgumentParser, profile: dict[str, Any], given: argparse.Namespace) -> argparse.Namespace:
    """Defaults, then the profile's values, then the command line's."""
    layers: dict[str, Any] = {a.dest: a.default for a in parser._actions if a.default is not argparse.SUPPRESS}
    layers.update(profile)
    layers.update(vars(given))
    return argparse.Namespace(**layers)


def runs(
    make_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str], args: argparse.Namespace
) -> list[tuple[str | None, argparse.Namespace]]:
    """(profile name or None, options) of each run the command line asks
    for: itself, or each profile it names, in turn."""
    parser = make_parser()
    given = given_options(make_parser, argv)
    if not (args.profile or args.all_profiles):
        if args.config:
            raise UsageError("--config names the profiles' file: add --profile NAME or --all-profiles")
        return [(None, merged(parser, {}, given))]
    path = Path(args.config).expanduser() if args.config else default_config()
    profiles = load(path, parser)
    names = list(profiles) if args.all_profiles else list(dict.fromkeys(args.profile))
    if not names:
        raise ConfigError(path, "holds no [profile.NAME] table")
    out = []
    for name in names:
        if name not in profiles:
            known = ", ".join(profiles) or "none"
            raise ConfigError(path, f"no profile {name!r} (its profiles: {known})")
        ns = merged(parser, profiles[name].values, given)
        for dest, key in POSITIONAL_KEYS.items():
            if getattr(ns, dest) is None:
                where = f"[profile.{name}]"
                raise ConfigError(path, f"no '{key}' (nor on the command line)", profiles[name].line, where)
        out.append((name, ns))
    return out
