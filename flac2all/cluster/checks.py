"""What the master's welcome asks each worker to check before it takes work
(health before work, docs/cluster.md): a few of the run's sources (first,
middle, last) with their sizes, which a worker with the same view of the
files sees too; a probe file the master writes into the output folder; and
the master's version line of each of the run's programs."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from flac2all import codecs, tools
from flac2all.cluster import protocol
from flac2all.cluster.ledger import Entry
from flac2all.errors import UsageError
from flac2all.model import Settings

PROBE_PREFIX = ".flac2all-probe-"


def make_checks(entries: Sequence[Entry], settings: Settings) -> protocol.Checks:
    """A few sources the workers must see as the master does (first,
    middle, last of ``entries``), and a probe file, made here, in the
    output folder (the caller removes it at the run's end)."""
    picked = sorted({0, len(entries) // 2, len(entries) - 1}) if entries else []
    sources = list(dict.fromkeys((entries[i].task.source, entries[i].task.size) for i in picked))
    for stale in settings.outdir.glob(f"{PROBE_PREFIX}*"):  # a killed master's (the lock keeps others out)
        stale.unlink(missing_ok=True)
    probe = settings.outdir / f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot write a probe file into {settings.outdir}: {exc.strerror}") from None
    return protocol.Checks(tuple(sources), probe, versions(settings))


def versions(settings: Settings) -> tuple[tuple[str, str], ...]:
    """This host's version line of each of the run's programs, as the
    settings hashes it records are made of (the engine's probes, cached):
    a worker with others refuses the run unless told otherwise."""
    programs = dict.fromkeys(p for mode in settings.modes for p in codecs.resolve(mode).programs)
    return tuple((program, line) for program, line in tools.versions(programs).items() if line)
