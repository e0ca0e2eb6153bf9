"""Which stage of a finished pipeline to blame, in its own words.

In ``decoder | adapter | encoder``, a stage whose reader died first gets
SIGPIPE or, if it ignores that signal as ffmpeg does, a write error on its
stdout ("Error closing file pipe:1: Broken pipe"): either way its failure
only shows that a later stage failed. The cause is the first stage, in
pipeline order, that failed of something else: a decoder that stopped on a
corrupt source truncates what the encoder reads, so the earlier real
failure is the cause of any later one. Pure functions of what the stages
did (but ``blocked_writing``, which asks the system); ``pipeline`` runs them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

from flac2all.errors import FULL_TEXT, WRITE_FAILED, TaskError

STDERR_TAIL = 64 * 1024
# What a writer says when its reader is gone (EPIPE's strerror).
BROKEN_PIPE = re.compile(r"broken pipe", re.IGNORECASE)


# A process's wait channel while it waits to write to a full pipe: Linux's
# kernel function, FreeBSD's sleep message.
PIPE_WRITE_WAITS = ("pipe_write", "pipewr")


def wchan_file(pid: int) -> str:
    """Linux's /proc/PID/wchan."""
    with open(f"/proc/{pid}/wchan") as f:
        return f.read().strip()


def wchan_ps(pid: int) -> str:
    """What ``ps -o wchan=`` shows (FreeBSD's ps asks the kernel, not /proc)."""
    try:
        done = subprocess.run(
            ["ps", "-o", "wchan=", "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout.strip()


def wait_channel(pid: int) -> str:
    """What process ``pid`` sleeps on, from the first source that tells;
    "" when none does (a hung stage is then named as the first one still
    running)."""
    for read in (wchan_file, wchan_ps):
        try:
            channel = read(pid)
        except OSError:
            continue
        if channel:
            return channel
    return ""


def blocked_writing(pid: int) -> bool:
    """Whether the process sleeps in a write to a full pipe (its wchan)."""
    channel = wait_channel(pid)
    return any(wait in channel for wait in PIPE_WRITE_WAITS)


def read_tail(fileobj) -> str:
    """The last STDERR_TAIL bytes of a stage's stderr file, as text."""
    size = fileobj.seek(0, os.SEEK_END)
    if size == 0:
        return ""
    fileobj.seek(max(0, size - STDERR_TAIL))
    return fileobj.read().decode("utf-8", "replace")


def last_error_line(stderr: str) -> str:
    """The program's own most telling line: the last one saying that a
    write failed (the cause a full disk shows), else the last one mentioning
    an error, else the last non-empty one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for telling in (lambda s: FULL_TEXT.search(s) or WRITE_FAILED.search(s), lambda s: "error" in s.lower()):
        for line in reversed(lines):
            if telling(line):
                return line[:300]
    return lines[-1][:300] if lines else ""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def pipe_symptom(returncode: int, stderr: str) -> bool:
    """Whether a stage failed only because the stage reading its output was
    gone: killed by SIGPIPE, or a non-zero exit after a broken pipe."""
    if returncode == -signal.SIGPIPE:
        return True
    return returncode > 0 and BROKEN_PIPE.search(stderr) is not None


def blame(programs: list[str], returncodes: list[int], stderrs: list[str]) -> TaskError | None:
    """Why a finished pipeline failed, or None if it did not.

    The first stage (in pipeline order) whose failure is not a pipe symptom
    is blamed; when every failure is one, the stage reading from the first
    failing one (it exited 0 without reading all its input). A pipeline whose
    stages all exited 0 still failed if one said a write failed for want
    of space (ffmpeg exits 0 when it cannot write a file's trailer).
    """
    failed = [i for i, code in enumerate(returncodes) if code != 0]
    if not failed:
        for program, stderr in zip(programs, stderrs, strict=True):
            lines = [line.strip() for line in stderr.splitlines() if FULL_TEXT.search(line)]
            if lines:
                return TaskError(f"{program} reported: {lines[-1][:300]}", 1)
        return None
    real = [i for i in failed if not pipe_symptom(returncodes[i], stderrs[i])]
    if not real and failed[0] + 1 < len(programs):  # its reader left early, and said nothing of it
        reader = failed[0] + 1
        early = TaskError(f"{programs[reader]} {describe_exit(returncodes[reader])} before reading all its input", 1)
        early.stderr = stderrs[reader]
        return early
    cause = real[0] if real else failed[0]
    detail = last_error_line(stderrs[cause])
    message = f"{programs[cause]} {describe_exit(returncodes[cause])}"
    failure = TaskError(f"{message}: {detail}" if detail else message, returncodes[cause])
    failure.stderr = stderrs[cause]  # for the runner to read the decoder's own words (decoding.fallback)
    return failure


def only_pipe_symptoms(returncodes: list[int], stderrs: list[str]) -> bool:
    """Whether some stage failed and every failure is a pipe symptom."""
    failed = [i for i, code in enumerate(returncodes) if code != 0]
    return bool(failed) and all(pipe_symptom(returncodes[i], stderrs[i]) for i in failed)
