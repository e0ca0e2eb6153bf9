"""Who may talk to the master, and what it says about those it refuses.

CurveZMQ with a ZAP handler (pyzmq's ThreadAuthenticator, over a folder of
authorized public keys) decides; this module makes every refusal visible:
the ZAP handler knows the address and that a key is unknown; the socket
monitor sees the handshakes that fail before ZAP is asked (a worker that
pins another master key, or one with keys talking to a master without, or
the other way round); the master reports a peer of another protocol
version. Each (address, reason) is said once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import zmq

from flac2all.cluster import keys as cluster_keys
from flac2all.cluster.diagnose import monitor_socket, next_event

# (Not HANDSHAKE_FAILED_NO_DETAIL: that is a peer gone during the handshake,
# a worker's session ending, or its plain TCP probe; not a refusal.)
MONITORED = zmq.EVENT_ACCEPTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_DISCONNECTED
# Connections one address may hold at once: a host's worker processes, with
# room to spare; past that, a flood (hung up at once, and said once).
MAX_PER_ADDRESS = 128


class Refusals:
    """Refused connections, said once per (address, reason); fed from the
    authenticator's thread and the master's."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.lock = threading.Lock()
        self.seen: set[tuple[str, str]] = set()
        self.count = 0

    def refuse(self, address: str, reason: str) -> None:
        with self.lock:
            self.count += 1
            # A connection whose address was not read before it closed (the
            # monitor's events come late) is most likely the same peer
            # retrying: not said again under "an unknown address".
            if (address, reason) in self.seen or (not address and any(r == reason for _, r in self.seen)):
                return
            self.seen.add((address, reason))
        self.say(f"Refused a connection from {address or 'an unknown address'}: {reason}")


class AuthorizedKeys:
    """The public keys in the master's authorized/ folder, read again for a
    key not known yet: a key authorized while the master runs (a worker on
    the master's host makes its own) is accepted at once."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.keys: dict[bytes, bool] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        """Whether ``key`` (Z85) is authorized; in the authenticator's thread."""
        if key not in self.keys:
            from zmq.auth import load_certificates

            try:
                self.keys = load_certificates(self.folder)
            except (OSError, ValueError):
                pass  # a key file being written: the worker's next try reads it
        return key in self.keys


def secure(sock: zmq.Socket, ctx: zmq.Context, master: cluster_keys.MasterKeys, refusals: Refusals):
    """Make ``sock`` a CURVE server that accepts the authorized keys only;
    returns the authenticator (stop it when done). Its ZAP handler tells
    ``refusals`` about every key it turns away (the address comes with the
    ZAP request)."""
    # Imported here: it brings asyncio, a cost to every master without keys.
    from zmq.auth.thread import ThreadAuthenticator

    class LoggingAuthenticator(ThreadAuthenticator):
        address = ""

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            # One request at a time, in the authenticator's thread.
            self.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
            await super().handle_zap_message(msg)

        def _send_zap_reply(self, request_id, status_code, status_text, user_id="anonymous") -> None:
            if status_code != b"200":
                why = status_text.decode("utf-8", "replace")
                reason = "unknown key (not in the master's authorized/ folder)" if why == "Unknown key" else why
                refusals.refuse(self.address, reason)
            super()._send_zap_reply(request_id, status_code, status_text, user_id)

    auth = LoggingAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(cluster_keys.ZAP_DOMAIN, AuthorizedKeys(str(master.authorized)))
    sock.curve_secretkey = master.secret
    sock.curve_publickey = master.public
    sock.curve_server = True
    sock.zap_domain = cluster_keys.ZAP_DOMAIN.encode()
    return auth


def address_of(frame: zmq.Frame) -> str:
    """The address of the peer that sent ``frame`` ("" if unknown)."""
    try:
        return frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):
        return ""


def key_of(frame: zmq.Frame) -> str:
    """The CURVE public key (Z85) the connection that sent ``frame`` proved
    in its handshake, as the ZAP handler named it ("" without keys): who a
    worker is, whatever its messages say."""
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return ""
    return user if len(user) == 40 else ""


def on_socket(fd: int, hang_up: bool = False) -> str:
    """The address of the TCP peer on ``fd`` (libzmq's), if it is still
    open ("" if not); ``hang_up``: shut the connection down too (libzmq
    then closes it as a peer gone). The descriptor is borrowed, not
    duplicated: a master out of descriptors must still read it."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return ""
    try:
        host, *_ = s.getpeername()
        if hang_up:
            s.shutdown(socket.SHUT_RDWR)
        return host
    except (OSError, ValueError):
        return ""
    finally:
        s.detach()


class HandshakeWatch:
    """The master socket's monitor: handshakes that fail before ZAP."""

    def __init__(self, sock: zmq.Socket, refusals: Refusals, secure: bool) -> None:
        self.monitor = monitor_socket(sock, MONITORED)
        self.refusals = refusals
        self.secure = secure
        self.addresses: dict[int, str] = {}  # fd -> peer address, while connected
        self.per_address: dict[str, int] = {}  # address -> its connections
        self.failed: str | None = None

    def read(self) -> None:
        """Handle the events waiting on the monitor socket."""
        while self.monitor.poll(0):
            try:
                kind, value = next_event(self.monitor)
            except zmq.Again:
                return
            if kind == zmq.EVENT_ACCEPTED:
                self.accepted(value)
            elif kind == zmq.EVENT_DISCONNECTED:
                address = self.addresses.pop(value, "")
                if address and (left := self.per_address.pop(address, 1) - 1):
                    self.per_address[address] = left
                if self.failed is not None:  # the failure is this connection's (one I/O thread: in order)
                    self.refusals.refuse(address, self.failed)
                    self.failed = None
            else:
                self.failed = self.describe(kind, value)

    def accepted(self, fd: int) -> None:
        address = on_socket(fd)
        self.addresses[fd] = address
        if not address:
            return
        count = self.per_address[address] = self.per_address.get(address, 0) + 1
        if count > MAX_PER_ADDRESS:
            on_socket(fd, hang_up=True)
            self.refusals.refuse(address, f"more than {MAX_PER_ADDRESS} connections at once")

    def describe(self, kind: int, value: int) -> str:
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if self.secure:
                return (
                    "bad handshake: the worker has no keys (this master requires them; or the worker runs --insecure)"
                )
            return "bad handshake: the worker uses keys and this master runs --insecure"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "bad handshake: the worker pins another master's public key (master.key)"
        return "bad handshake (not a flac2all worker of this version?)"

    def close(self) -> None:
        self.monitor.close(0)
