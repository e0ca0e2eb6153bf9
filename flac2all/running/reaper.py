"""No process we start outlives us, even when we die of SIGKILL.

One small watcher process per process that starts encoders, started with
the first encoder. It reads a pipe whose write end only we hold; the pipe
ends when we end, however we end (exit, crash, SIGKILL, the OOM killer).
Every process we start carries this run's token in its environment
(``FLAC2ALL_RUN``), and so does everything they start. At the pipe's end the
watcher kills every process of ours that carries the token
(``/proc/PID/environ``), twice, a little apart, for one caught between fork
and exec at the moment we died.

Where there is no /proc (FreeBSD mounts none by default) it kills instead
the process groups we told it of through the same pipe (``started``,
``ended``): each encoder is the leader of its own group, which holds
whatever it started unless that left the group itself, and one started in
the instant we died is missed.

This replaces one ``setpriv --pdeathsig`` exec per encoder (about 1.2 ms of
CPU each, a twentieth of the CPU of a run of 1 s files) with one process per
run, and also ends the encoders' own children, which the parent-death signal
did not reach.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading

VARIABLE = "FLAC2ALL_RUN"

# Runs in its own interpreter (-I -S: no site, no user paths: it starts in
# about 10 ms). argv: the variable and the token; stdin is the pipe, which
# carries a line per group started ("+PID") and reaped ("-PID").
WATCHER = r"""
import os, signal, sys, time
needle = ("\0" + sys.argv[1] + "=" + sys.argv[2] + "\0").encode()
groups = set()
rest = b""
while chunk := os.read(0, 4096):
    *lines, rest = (rest + chunk).split(b"\n")
    for line in lines:
        (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
me = os.getpid()
for attempt in range(3):
    if attempt:
        time.sleep(0.05)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    try:
        names = os.listdir("/proc")
    except OSError:
        names = []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/" + name + "/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in b"\0" + env:
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
"""


class Watcher:
    """The watcher of this process: its token and the pipe it reads."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.owner = os.getpid()
        read_end, self.write_end = os.pipe()  # both close on exec
        os.set_blocking(self.write_end, False)  # a watcher that stopped reading never holds us up
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHER, VARIABLE, self.token],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Not an outer run's token (a flac2all started by one): if
                # that run dies, it kills us, and this watcher ends our
                # encoders.
                env={k: v for k, v in os.environ.items() if k != VARIABLE},
                start_new_session=True,  # no Ctrl-C, no SIGHUP from our terminal
            )
        finally:
            os.close(read_end)
        self.refresh()

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def refresh(self) -> None:
        """The environment for a process we start, ours with the token, read
        now: built once, not for every process (as bytes, which
        ``procs.Proc`` passes on as they are)."""
        self.env = {**os.environb, VARIABLE.encode(): self.token.encode()}

    def tell(self, line: bytes) -> None:
        try:
            os.write(self.write_end, line)
        except OSError:  # full (then that group is not killed) or the watcher is gone
            pass

    def forget(self) -> None:
        """In a forked child: the parent's pipe is not ours to hold."""
        try:
            os.close(self.write_end)
        except OSError:
            pass


_lock = threading.Lock()
_watcher: Watcher | None = None


def refresh() -> None:
    """Read the environment again for the processes started from now on
    (a run's start: a program that runs several may change it between)."""
    watcher = _watcher
    if watcher is not None and watcher.alive():
        watcher.refresh()


def environment() -> dict[bytes, bytes]:
    """The environment to start a process with so that it dies with us (as
    it was at the last ``refresh``); starts this process's watcher the first
    time (again if it died)."""
    global _watcher
    watcher = _watcher
    if watcher is None or not watcher.alive():
        with _lock:
            if _watcher is None or not _watcher.alive():
                if _watcher is not None and _watcher.owner == os.getpid():
                    os.close(_watcher.write_end)
                _watcher = Watcher()
            watcher = _watcher
    return watcher.env


def started(pid: int) -> None:
    """Process ``pid``, the leader of its group, has been started."""
    watcher = _watcher
    if watcher is not None and watcher.owner == os.getpid():
        watcher.tell(b"+%d\n" % pid)


def ended(pid: int) -> None:
    """Process ``pid`` has been reaped: its number may be another's now."""
    watcher = _watcher
    if watcher is not None and watcher.owner == os.getpid():
        watcher.tell(b"-%d\n" % pid)


def _after_fork_in_child() -> None:
    global _watcher
    if _watcher is not None:
        _watcher.forget()
        _watcher = None


os.register_at_fork(after_in_child=_after_fork_in_child)
