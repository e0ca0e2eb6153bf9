"""Write the man pages flac2all(1) and flac2all_worker(1) from the commands'
own parsers, so that they say what ``--help`` says:

    .venv/bin/python scripts/make_manpages.py          # into man/
    .venv/bin/python scripts/make_manpages.py DIR      # into DIR

The pages in man/ are committed and installed with the package (pyproject's
data-files, into share/man/man1); tests/test_manpages.py checks that they
are what this script writes now.

The options are read from argparse's groups (``_action_groups``): argparse
has no public way to list them with their help, and argparse-manpage reads
them the same way.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from flac2all import __version__
from flac2all.cluster import worker_cli
from flac2all.face import cli

PAGES = {
    "flac2all": (cli.build_parser, "convert a FLAC library to mp3, Ogg Vorbis, Opus, AAC, FLAC or any ffmpeg codec"),
    "flac2all_worker": (worker_cli.build_parser, "run flac2all's conversions for a master on other hosts"),
}
SEE_ALSO = {
    "flac2all": ["flac2all_worker", "flac", "lame", "oggenc", "opusenc", "ffmpeg"],
    "flac2all_worker": ["flac2all"],
}
# What depends on the machine the page is made on, not on the program.
MACHINE_SPECIFIC = re.compile(r", here \d+\)")


def escape(text: str) -> str:
    """Text as roff reads it literally: backslashes and dashes escaped, and a
    line never starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def invocation(action: argparse.Action) -> str:
    """``\\fB\\-o\\fR, \\fB\\-\\-outdir\\fR \\fIDIR\\fR``, as ``--help`` shows it."""
    if not action.option_strings:
        return f"\\fI{escape(action.metavar or action.dest)}\\fR"
    flags = ", ".join(f"\\fB{escape(flag)}\\fR" for flag in action.option_strings)
    if action.nargs == 0:
        return flags
    if action.choices is not None:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        value = action.metavar or action.dest.upper()
    value = f"\\fI{escape(str(value))}\\fR"
    return f"{flags} [{value}]" if action.nargs == "?" else f"{flags} {value}"


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help as ``--help`` prints it (its %-formats expanded),
    without what depends on this machine."""
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    return MACHINE_SPECIFIC.sub(")", text)


def raw_sections(text: str) -> list[str]:
    """The epilog's text: a line ending in ':' at the margin heads a
    section; the rest is kept as laid out."""
    out: list[str] = []
    for line in text.rstrip().splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            out += [".fi", f".SH {escape(line[:-1].upper())}", ".nf"]
        else:
            out.append(escape(line) if line.strip() else "")
    return [".nf", *out, ".fi"]


def page(name: str) -> str:
    """The man page of ``name``, in roff."""
    build, summary = PAGES[name]
    parser = build()
    lines = [
        f'.TH {escape(name.upper())} 1 "" "flac2all {__version__}" "User Commands"',
        ".nh",  # no hyphenation: an option's name is found as it is typed
        ".ad l",
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary)}",
        ".SH SYNOPSIS",
        ".nf",
        *(escape(line.strip()) for line in parser.format_usage().removeprefix("usage: ").splitlines()),
        ".fi",
    ]
    if parser.description:
        lines += [".SH DESCRIPTION", escape(" ".join(parser.description.split()))]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        if group.title == "positional arguments":
            lines.append(".SH ARGUMENTS")
        elif group.title in ("options", "optional arguments"):
            lines.append(".SH OPTIONS")
        else:  # the named groups: cluster mode, Dask, profiles
            lines.append(f".SS {escape(group.title or '')}")
        for action in actions:
            lines += [".TP", invocation(action), escape(help_text(parser, action)) or "\\&"]
    if parser.epilog:
        lines += raw_sections(parser.epilog)
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{escape(other)}\\fR(1)" for other in SEE_ALSO[name])]
    return "\n".join(lines) + "\n"


def write(folder: Path) -> list[Path]:
    """Write every page into ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PAGES:
        path = folder / f"{name}.1"
        path.write_text(page(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(path)
