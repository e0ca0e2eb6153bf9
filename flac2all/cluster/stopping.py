"""What the signals asked a worker process for (rq's request_stop, then
request_force_stop): the first SIGTERM a warm stop, the second a hard one;
SIGINT a warm stop only (see worker.py)."""

from __future__ import annotations

import signal


class StopRequest:
    """What the signals asked for: a warm stop, then a hard one."""

    def __init__(self) -> None:
        self.terms = 0
        self.interrupted = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigterm(self, signum: int, frame: object) -> None:
        self.terms += 1

    def on_sigint(self, signum: int, frame: object) -> None:
        self.interrupted = True  # the parent's SIGTERM for the same Ctrl-C follows

    @property
    def warm(self) -> bool:
        """Take no new job; leave once the current one is done."""
        return self.terms >= 1 or self.interrupted

    @property
    def hard(self) -> bool:
        """Kill the job's encoders and leave now."""
        return self.terms >= 2
