"""``python -m flac2all`` and the ``flac2all`` command.

The signal handlers come first, before the imports and the parse that take
the first fraction of a second: a signal then (a terminal closed as the run
starts, a SIGTERM from a service manager) is kept and handled once the run's
own handlers are in place, instead of killing the process without a word.
"""

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class EarlySignals:
    """The signals caught before the run's handlers are installed, and the
    standard streams that were a terminal (once it hangs up, isatty() may
    fail)."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self.terminal_fds = [fd for fd in (1, 2) if os.isatty(fd)]

    def handle(self, signum: int, frame: object) -> None:
        self.caught.append(signum)


def main() -> int:
    early = EarlySignals()
    for signum in SIGNALS:
        signal.signal(signum, early.handle)
    from flac2all.face import cli

    return cli.main(early=early)


if __name__ == "__main__":
    sys.exit(main())
