"""``flac2all_worker --config FILE``: a worker's options in a TOML file.

One ``[worker]`` table whose keys are the command line's long options
without their dashes (``map = ["/storage/music=/mnt/storage/music"]``,
``allow``, ``port``, ``threads``, ``keys``, ``insecure``, ``stay``,
``allow-other-encoders``, ``retry-seconds``) and ``master`` for
MASTER_HOST. Every key is checked when the file is read, before anything
starts: an unknown key, a value of the wrong type or out of its range (a
map or folder the command line would refuse, a port past 65535, a retry
time below 0 or not finite) is an error naming the file, the line and the
key, as device profiles' are (face/config.py). The command line
overrides the file's values; its ``--map`` and ``--allow`` add to the
file's.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

from flac2all.cluster.paths import PathMap
from flac2all.errors import TaskError, UsageError
from flac2all.face.config import MAX_CONFIG, ConfigError, key_line
from flac2all.face.values import MAX_THREADS
from flac2all.tags.source import open_regular

# key -> (its type, what a bad value is told to be)
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "master": (str, "a host name"),
    "port": (int, "a whole number"),
    "threads": (int, "a whole number"),
    "keys": (str, "a folder's path"),
    "allow": (list, "a list of folders"),
    "map": (list, 'a list of "MASTER_PATH=WORKER_PATH"'),
    "insecure": (bool, "true or false"),
    "stay": (bool, "true or false"),
    "allow-other-encoders": (bool, "true or false"),
    "retry-seconds": ((int, float), "a number of seconds"),
}


def checked(key: str, value: Any) -> Any:
    """``value`` of ``key`` as argparse would have made it, or ValueError."""
    kind, what = KEYS[key]
    # TOML's true is no number: bool is an int subclass in Python.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"must be {what}")
    if kind is list:
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"must be {what}")
        for item in value:  # as the command line would check it, here where the file's line is known
            try:
                if key == "map":
                    PathMap.parse(item)
                elif not os.path.isabs(item):
                    raise UsageError(f"{item} is not an absolute path")
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return list(value)
    if key == "keys":
        return Path(os.path.expanduser(value))
    if key == "retry-seconds" and not 0 <= value < math.inf:
        raise ValueError(f"must be {what}, 0 or more")
    if (key == "port" and not 0 < value < 65536) or (key == "threads" and not 0 < value <= MAX_THREADS):
        raise ValueError(f"must be {what} in 1..65535" if key == "port" else f"must be {what} in 1..{MAX_THREADS}")
    return float(value) if key == "retry-seconds" else value


def load(path: Path) -> dict[str, Any]:
    """The ``[worker]`` table of ``path`` as argparse destinations."""
    try:
        with open_regular(path) as f:  # (a FIFO named as the config never blocks the worker's start)
            raw = f.read(MAX_CONFIG + 1)
    except OSError as exc:
        raise ConfigError(path, f"cannot read it: {exc.strerror}") from None
    except TaskError as exc:
        raise ConfigError(path, f"cannot read it: {exc.message}") from None
    if len(raw) > MAX_CONFIG:
        raise ConfigError(path, f"larger than {MAX_CONFIG} bytes")
    try:
        text = raw.decode()
        data = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, f"not a TOML file: {exc}") from None
    for key in data:
        if key != "worker":
            raise ConfigError(path, "unknown key (a worker's options are a [worker] table)", key_line(text, [key]), key)
    table = data.get("worker")
    if not isinstance(table, dict):
        raise ConfigError(path, "no [worker] table", key_line(text, ["worker"]), "worker")
    values = {}
    for key, value in table.items():
        line = key_line(text, ["worker", key])
        if key not in KEYS:
            raise ConfigError(path, f"unknown key (one of {', '.join(KEYS)})", line, f"[worker] {key}")
        try:
            values[key.replace("-", "_")] = checked(key, value)
        except ValueError as exc:
            raise ConfigError(path, str(exc), line, f"[worker] {key}") from None
    return values
