"""An attacker who can write the output tree: a child process that swaps a
folder for a symlink to another folder, and back, every millisecond."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# argv: the folder, the link's target, how many seconds. The real folder
# is put aside under another name while the link stands in its place; a
# folder the run made meanwhile is moved aside too (``made-N``).
FLIPPER = r"""
import os, sys, time
folder, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
aside = folder + ".real"
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    try:
        os.rename(folder, aside)
    except OSError:
        try:
            os.rename(folder, folder + ".made-" + str(n))
        except OSError:
            pass
    try:
        os.symlink(target, folder)
    except OSError:
        pass
    time.sleep(0.001)
    if os.path.islink(folder):
        os.unlink(folder)
    try:
        os.rename(aside, folder)
    except OSError:
        pass
    time.sleep(0.001)
    n += 1
if os.path.islink(folder):
    os.unlink(folder)
print(n, flush=True)
"""


def flip(folder: Path, target: Path, seconds: float) -> subprocess.Popen:
    """Start swapping ``folder`` for a link to ``target`` for ``seconds``."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", FLIPPER, str(folder), str(target), str(seconds)], stdout=subprocess.PIPE
    )


def planted(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (links not followed) and its bytes."""
    found = {}
    for here, _, files in os.walk(root):
        for name in files:
            path = Path(here, name)
            found[os.fspath(path.relative_to(root))] = b"" if path.is_symlink() else path.read_bytes()
    return found
