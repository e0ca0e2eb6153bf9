"""Every probe of an external program: where it is, its version, ffmpeg's
encoder list.

Each probe runs lazily, at most once per process, and is cached: nothing
runs at import time. The engine probes before planning and hands the facts
to the planner as data, so that planning never starts a process.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Iterable

from flac2all.errors import MissingProgramError

# Debian package that provides each program we may run; named in the error
# shown when a program is missing. FreeBSD's packages have the same names.
PACKAGES = {
    "flac": "flac",
    "metaflac": "flac",
    "lame": "lame",
    "oggenc": "vorbis-tools",
    "opusenc": "opus-tools",
    "ffmpeg": "ffmpeg",
}


@functools.lru_cache(maxsize=64)
def which(program: str) -> str | None:
    """shutil.which, once per program and process (it stats every folder
    of PATH, which shows on runs of thousands of short tasks)."""
    return shutil.which(program)


def package_of(program: str) -> str:
    """The Debian package to install for ``program``."""
    return PACKAGES.get(program, program)


def install_hint(programs: list[str], platform: str = sys.platform) -> str:
    """How to install ``programs``, all at once: with pkg on FreeBSD, else
    apt-get."""
    packages = list(dict.fromkeys(package_of(program) for program in programs))
    plural = "s" if len(packages) > 1 else ""
    if platform.startswith("freebsd"):
        return f"install the package{plural}: pkg install {' '.join(packages)}"
    return f"install the Debian package{plural}: apt-get install {' '.join(packages)}"


def run_probe(argv: list[str]) -> str:
    """A probe's output (stdout, else stderr); "" when it cannot run."""
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout or out.stderr


@functools.cache
def version(program: str) -> str:
    """The first line a program prints of its version ("" when it cannot
    be run)."""
    flag = "-version" if program == "ffmpeg" else "--version"
    lines = run_probe([program, flag]).strip().splitlines()
    return lines[0] if lines else ""


# The encoders ``flac2all --version`` reports, in the order it lists them.
ENCODERS = ("flac", "lame", "oggenc", "opusenc", "ffmpeg")


def found(programs: Iterable[str] = ENCODERS) -> list[str]:
    """One line per program: where PATH found it and the first line of its
    version, or "not found"."""
    lines = []
    for program in programs:
        path = which(program)
        if path is None:
            lines.append(f"{program}: not found")
        else:
            lines.append(f"{program} ({path}): {version(program) or 'no version printed'}")
    return lines


def versions(programs: Iterable[str]) -> dict[str, str]:
    """Program -> version line, for the planner's settings hashes."""
    return {program: version(program) for program in programs}


@functools.cache
def ffmpeg_encoders() -> dict[str, tuple[str, bool]]:
    """ffmpeg's audio encoders: name -> (description, experimental).

    Probed once per process, and only when an ffmpeg mode is asked for.
    Empty when ffmpeg is not installed.
    """
    found = {}
    for line in run_probe(["ffmpeg", "-hide_banner", "-nostdin", "-encoders"]).splitlines():
        parts = line.split(None, 2)
        # " A..X.D name   description"; the legend lines end in "= ...".
        if len(parts) == 3 and len(parts[0]) == 6 and parts[0][0] == "A" and not parts[2].startswith("="):
            found[parts[1]] = (parts[2].strip(), parts[0][3] == "X")
    return found


def require(programs: dict[str, str]) -> None:
    """Fail before any work when a program is missing; ``programs`` maps
    each program to what needs it (for example "mode mp3")."""
    missing = [(program, needed_by) for program, needed_by in programs.items() if which(program) is None]
    if not missing:
        return
    # All of them at once: one install command, not one failed run per program.
    hint = install_hint([program for program, _ in missing])
    if len(missing) == 1:
        ((program, needed_by),) = missing
        raise MissingProgramError(f"{needed_by} needs the program '{program}', which is not installed ({hint})")
    needs = ", ".join(f"{needed_by} needs '{program}'" for program, needed_by in missing)
    raise MissingProgramError(f"{needs}, which are not installed ({hint})")
