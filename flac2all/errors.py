"""The error classes and exit statuses of flac2all.

Exceptions are raised inside; ``cli.main`` is the one place that turns them
into messages and exit statuses.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """What the ``flac2all`` process returns."""

    OK = 0
    FAILURES = 1
    USAGE = 2
    SIGHUP = 128 + 1
    SIGINT = 128 + 2
    SIGTERM = 128 + 15


class Flac2allError(Exception):
    """An error with a message meant for the user."""

    exit_status = ExitStatus.USAGE


class UsageError(Flac2allError):
    """A wrong option, mode or path on the command line."""


class MissingProgramError(Flac2allError):
    """An encoder program needed by the requested modes is not installed."""


class OutdirBusyError(Flac2allError):
    """Another flac2all run is writing into the same output folder."""


class TaskError(Exception):
    """One task failed; becomes a failed TaskResult, never stops the run.

    ``returncode`` is the failing program's exit status, or 1 when no program
    failed (for example a source that is not a FLAC file).
    """

    def __init__(self, message: str, returncode: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode


def describe_oserror(exc: OSError) -> str:
    """'Permission denied' rather than '[Errno 13] Permission denied: ...'."""
    return exc.strerror or str(exc)
