"""A worker process: sessions with a master, one after the other
(session.py is one of them, from hello to its end), until the run is over,
a signal stops it, or the master stays away. The command line that forks
these processes is worker_cli.py; the protocol and its timings,
docs/cluster.md.

If the master falls silent for its dead-after time the session kills its
encoders and removes their temp files; the process reconnects for a
bounded time before exiting non-zero.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import zmq

from flac2all.cluster import keys as cluster_keys
from flac2all.cluster import protocol
from flac2all.cluster.diagnose import ConnectionWatch
from flac2all.cluster.paths import PathMaps
from flac2all.cluster.session import Session, SessionEnd, say
from flac2all.cluster.stopping import StopRequest

__all__ = ["LOST_MASTER", "WorkerProcess", "say"]

LOST_MASTER = 3  # exit status when the master stayed away too long


class WorkerProcess:
    """One worker process: sessions with the master, one after the other,
    until the run is over, a signal stops it, or the master stays away."""

    def __init__(
        self,
        host: str,
        port: int,
        worker_keys: cluster_keys.WorkerKeys | None,
        retry_seconds: float,
        allowed: tuple[Path, ...] = (),
        stay: bool = False,
        speaker: bool = True,
        other_encoders: bool = False,
        maps: PathMaps | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.endpoint = f"tcp://{f'[{host}]' if ':' in host else host}:{port}"
        self.keys = worker_keys
        self.retry_seconds = retry_seconds
        self.allowed = allowed
        self.stay = stay  # after a run, or a master away too long: wait for the next one
        # The one process of its host that says what is the host's (no
        # master, the run refused, the run over): not once per process.
        self.speaker = speaker
        self.other_encoders = other_encoders  # encoders of other versions than the master's may run
        self.maps = maps or PathMaps()  # where this node sees the master's folders (--map)
        self.stop = StopRequest()
        self.dropped = 0
        self.failed = False  # it failed or refused work: exit 1
        self.diagnosis = ""  # why no master answers, as last said

    def run(self) -> int:
        self.stop.install()
        self.ctx = zmq.Context()
        lost_since = time.monotonic()
        done = 1 if self.failed else 0
        try:
            while not self.stop.warm:
                end = Session(self).run()
                done = 1 if self.failed else 0
                if end is SessionEnd.SHUTDOWN and self.stay:
                    self.tell("flac2all_worker: the run is over; waiting for the next master (--stay)")
                    lost_since = time.monotonic()
                    self.back_off(1.0)  # the old master closes its socket meanwhile
                    continue
                if end in (SessionEnd.SHUTDOWN, SessionEnd.SIGNALLED) or self.stop.warm:
                    return done
                if end is SessionEnd.CONNECTED:
                    lost_since = time.monotonic()  # it was up: the bounded wait starts now
                if time.monotonic() - lost_since > self.retry_seconds and not self.stay:
                    self.tell(
                        f"flac2all_worker: no master answered at {self.endpoint} for {self.retry_seconds:g} s "
                        f"({self.diagnosis or 'no answer'}), giving up",
                        sys.stderr,
                    )
                    return LOST_MASTER
                self.back_off(min(2.0, 0.2 + (time.monotonic() - lost_since) / 10))
            return done
        finally:
            self.ctx.term()

    def diagnose(self, watch: ConnectionWatch) -> None:
        """Say why no master answered, once per new reason."""
        why = watch.diagnosis(self.host, self.port)
        if why != self.diagnosis:
            self.diagnosis = why
            self.tell(f"flac2all_worker: no master at {self.endpoint}: {why}; still trying", sys.stderr)

    def tell(self, line: str, stream=None) -> None:
        """Say what every process of this host would say alike, once."""
        if self.speaker:
            say(line, stream)

    def back_off(self, seconds: float) -> None:
        """Wait before reconnecting, unless a signal asks to stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.warm and time.monotonic() < deadline:
            time.sleep(0.05)

    def socket(self) -> tuple[zmq.Socket, ConnectionWatch]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE + 1024)
        sock.setsockopt(zmq.SNDHWM, 100)
        if self.keys is not None:
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_serverkey = self.keys.master_public
        watch = ConnectionWatch(sock)
        sock.connect(self.endpoint)
        return sock, watch


if __name__ == "__main__":  # python -m flac2all.cluster.worker, as before the CLI had its own module
    from flac2all.cluster.worker_cli import main

    sys.exit(main())
