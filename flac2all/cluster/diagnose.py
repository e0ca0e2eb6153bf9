"""Why a worker hears no master: the host name does not resolve, nothing
listens there (connection refused), nothing answers (a firewall, a wrong
address), or the handshake was refused (a wrong or unknown key, or keys on
one side only). Read from the worker socket's monitor, and a plain TCP
connection when ZeroMQ never got one."""

from __future__ import annotations

import socket
import struct
import uuid

import zmq

MONITORED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)
WRONG_KEY = "handshake refused: wrong or unknown key"


def monitor_socket(sock: zmq.Socket, events: int) -> zmq.Socket:
    """A PAIR socket receiving ``sock``'s events, on an inproc address of its
    own (pyzmq's get_monitor_socket names it after the socket's file
    descriptor, which the next socket may reuse while the last one lingers)."""
    address = f"inproc://flac2all-monitor-{uuid.uuid4().hex}"
    sock.monitor(address, events)
    pair = sock.context.socket(zmq.PAIR)
    pair.setsockopt(zmq.LINGER, 0)
    pair.connect(address)
    return pair


def next_event(monitor: zmq.Socket) -> tuple[int, int]:
    """(event, value) of the next monitor message, without waiting (raises
    zmq.Again). Read here rather than with zmq.utils.monitor, which imports
    asyncio: a cost to every master and worker start."""
    frames = monitor.recv_multipart(zmq.NOBLOCK)
    return struct.unpack("=hi", frames[0][:6])


def resolves(host: str, port: int) -> bool:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return True


class ConnectionWatch:
    """What happened to one worker socket's connections."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.monitor = monitor_socket(sock, MONITORED)
        self.connected = self.handshaken = False
        self.refused: str | None = None

    def read(self) -> None:
        while self.monitor.poll(0):
            try:
                kind, _ = next_event(self.monitor)
            except zmq.Again:
                return
            if kind == zmq.EVENT_CONNECTED:
                self.connected = True
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshaken = True
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.refused = f"{WRONG_KEY} (or keys on one side only: --insecure on one, keys on the other)"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused = f"{WRONG_KEY} (is this worker's public key in the master's authorized/ folder?)"
            elif kind == zmq.EVENT_DISCONNECTED and self.connected and not self.handshaken and self.refused is None:
                self.refused = f"{WRONG_KEY} (the master closed the connection during the handshake)"

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)

    def diagnosis(self, host: str, port: int) -> str:
        """One line: why no master answered on this socket."""
        self.read()
        if self.refused is not None:
            return self.refused
        if self.handshaken:
            return "no answer from the master (a flac2all of another version?)"
        if not resolves(host, port):
            return f"host name {host} does not resolve"
        if self.connected:
            return "no answer: the connection was made, but no handshake came (not a flac2all master?)"
        try:
            with socket.create_connection((host, port), timeout=2):
                return "no answer: the port takes connections, but no flac2all master answered"
        except ConnectionRefusedError:
            return f"connection refused: nothing listens on {host} port {port} (is the master running, with this port?)"
        except OSError:
            return f"no answer from {host} port {port} (a firewall, or the wrong address?)"
