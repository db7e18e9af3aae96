"""One adb transport connection from the host's adb server: CNXN, then streams.

With authentication on (auth.py), the host's CNXN is answered with AUTH(TOKEN) and nothing but
AUTH is heard until a signature matches an accepted key; only then does the device send its
CNXN, with adbd's version and the smaller of the two max payloads. Every new CNXN starts over,
authentication included, as it does on adbd.

A reader thread parses messages and routes them; every accepted OPEN gets a Stream and a thread
running its service. Writes come from any thread under one lock, each message in one
scatter-gather send. The adb server reads its side without ever blocking on us, so a writer
blocked on a full socket always makes progress.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgepack.devices.virtual import auth
from edgepack.devices.virtual import protocol as p
from edgepack.devices.virtual.stream import Buffer, Stream, StreamClosed

if TYPE_CHECKING:
    from edgepack.devices.virtual.server import VirtualDevice

log = logging.getLogger("edgepack.virtual_device")

Handler = Callable[[Stream], None]

# Errors that mean "the host went away" rather than a bug: never worth a traceback.
DISCONNECTS = (StreamClosed, EOFError, ConnectionError, TimeoutError, OSError)


class Connection:
    def __init__(self, sock: socket.socket, device: VirtualDevice, peer: str) -> None:
        self.sock = sock
        self.device = device
        self.peer = peer
        self.max_send = 4096  # until the host's CNXN says more
        self.host_version = p.A_VERSION_MIN
        self.host_features: frozenset[str] = frozenset()
        self.online = False
        self._token: bytes | None = None  # the AUTH token awaiting a signature
        self._auth_failures = 0
        self._refused_key_logged = False
        self._rfile = sock.makefile("rb", buffering=256 * 1024)
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._dead = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vd-conn-{peer}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return not self._dead.is_set()

    # ------------------------------------------------------------------ sending

    def send(self, command: int, arg0: int, arg1: int, payload: Buffer = b"") -> None:
        if self._dead.is_set():
            raise StreamClosed("connection closed")
        n = len(payload)
        if n:
            self.device.throttle_out.consume(n, self.device.faults.bandwidth)
        check = 0
        if n and (command == p.A_CNXN or self.host_version < p.A_VERSION_SKIP_CHECKSUM):
            check = p.checksum(payload)
        header = p.pack_header(command, arg0, arg1, n, check)
        try:
            with self._send_lock:
                if n:
                    _sendmsg_all(self.sock, [header, payload])
                else:
                    self.sock.sendall(header)
        except OSError as exc:
            self.close()
            raise StreamClosed("connection lost") from exc

    def send_okay(self, local_id: int, remote_id: int) -> None:
        try:
            self.send(p.A_OKAY, local_id, remote_id)
        except StreamClosed:
            pass  # the reader notices the same loss and closes every stream

    def send_write(self, local_id: int, remote_id: int, data: Buffer) -> None:
        self.send(p.A_WRTE, local_id, remote_id, data)

    def send_close(self, local_id: int, remote_id: int) -> None:
        try:
            self.send(p.A_CLSE, local_id, remote_id)
        except StreamClosed:
            pass

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Drop the connection (idempotent); streams see their peer gone."""
        if self._dead.is_set():
            return
        self._dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._close_streams()

    def forget(self, stream: Stream) -> None:
        with self._streams_lock:
            if self._streams.get(stream.local_id) is stream:
                del self._streams[stream.local_id]

    def _close_streams(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream.peer_closed()

    # ------------------------------------------------------------------ receiving

    def _run(self) -> None:
        try:
            while not self._dead.is_set():
                raw = self._rfile.read(p.HEADER_SIZE)
                if len(raw) < p.HEADER_SIZE:
                    break  # the host closed the connection
                header = p.unpack_header(raw)
                payload = self._rfile.read(header.length) if header.length else b""
                if len(payload) < header.length:
                    break
                faults = self.device.faults
                if faults.latency > 0:
                    time.sleep(faults.latency)
                if header.length:
                    self.device.throttle_in.consume(header.length, faults.bandwidth)
                self._dispatch(header, payload)
        except p.ProtocolError as exc:
            log.warning("%s: dropping the connection: %s", self.peer, exc)
        except DISCONNECTS:
            pass
        finally:
            self.close()
            try:
                self._rfile.close()
                self.sock.close()
            except OSError:
                pass
            self.device.connection_closed(self)
            log.info("%s: disconnected", self.peer)

    def _dispatch(self, header: p.Header, payload: bytes) -> None:
        command = header.command
        if command == p.A_CNXN:
            self._on_connect(header, payload)
        elif command == p.A_AUTH:
            self._on_auth(header.arg0, payload)
        elif not self.online:
            log.debug("%s: %s before CNXN ignored", self.peer, header.name)
        elif command == p.A_OPEN:
            self._on_open(header.arg0, payload)
        elif command == p.A_OKAY:
            stream = self._stream(header.arg1)
            if stream is not None:
                stream.acknowledged()
        elif command == p.A_WRTE:
            stream = self._stream(header.arg1)
            if stream is None:
                # Tell the host the stream is gone, or it waits for an OKAY forever.
                self.send_close(0, header.arg0)
            else:
                stream.deliver(payload)
        elif command == p.A_CLSE:
            stream = self._stream(header.arg1)
            if stream is not None:
                self.forget(stream)
                # adbd answers with a CLSE of its own; adb-shell waits for it after every sync
                # request and would time out without it.
                stream.peer_closed(answer=True)
        else:
            log.debug("%s: %s ignored", self.peer, header.name)

    def _stream(self, local_id: int) -> Stream | None:
        with self._streams_lock:
            return self._streams.get(local_id)

    def _on_connect(self, header: p.Header, payload: bytes) -> None:
        if self.online:
            # The host restarted its side of the transport: every stream of the old one ends.
            self._close_streams()
        self.online = False
        # adbd's update_version: the lower of the two versions, the smaller of the two payloads.
        self.host_version = min(header.arg0, p.A_VERSION)
        self.max_send = max(1, min(header.arg1, p.MAX_PAYLOAD))
        banner = payload.rstrip(b"\0").decode("utf-8", "replace")
        _, _, rest = banner.partition("::")
        for entry in rest.split(";"):
            key, _, value = entry.partition("=")
            if key == "features":
                self.host_features = frozenset(f for f in value.split(",") if f)
        if self.device.authenticator is None:
            self._go_online()
        else:
            self._send_token()

    def _go_online(self) -> None:
        self._token = None
        self.send(p.A_CNXN, p.A_VERSION, self.max_send, self.device.banner())
        self.online = True
        log.info("%s: connected (host version 0x%08x, max payload %d)",
                 self.peer, self.host_version, self.max_send)

    def _send_token(self) -> None:
        self._token = auth.new_token()
        self.send(p.A_AUTH, auth.AUTH_TOKEN, 0, self._token)

    def _on_auth(self, kind: int, payload: bytes) -> None:
        authenticator = self.device.authenticator
        if authenticator is None or self._token is None:
            log.debug("%s: AUTH %d not asked for, ignored", self.peer, kind)
            return
        if kind == auth.AUTH_SIGNATURE:
            key = authenticator.verify(self._token, payload)
            if key is not None:
                log.info("%s: authorized by key %s %r (%s)", self.peer, key.fingerprint,
                         key.comment, key.origin)
                self._auth_failures = 0
                self._go_online()
                return
            self._auth_failures += 1
            log.info("%s: a signature matched no accepted key", self.peer)
            if self._auth_failures > auth.FAILURES_BEFORE_DELAY:
                time.sleep(1.0)  # as adbd: a client guessing signatures gets one try a second
            self._send_token()  # a fresh token: the host tries its next key
        elif kind == auth.AUTH_RSAPUBLICKEY:
            # adbd would ask the phone's user; nobody is there to ask, so the key is refused by
            # not answering at all, and the host lists the device "unauthorized".
            if not self._refused_key_logged:
                self._refused_key_logged = True
                try:
                    offered = auth.parse_key_line(
                        payload.rstrip(b"\0").decode("ascii", "replace"), "offered")
                    what = f"{offered.fingerprint} {offered.comment!r}"
                except auth.KeyFileError:
                    what = "(not a valid adb key)"
                log.warning("%s: refused an unknown key %s; to accept it, add the host's "
                            "adbkey.pub line to %s", self.peer, what, authenticator.describe())
        else:
            # adbd takes the transport offline; only a new CNXN starts over.
            log.info("%s: AUTH type %d: offline until the next CNXN", self.peer, kind)
            self._token = None

    def _on_open(self, remote_id: int, payload: bytes) -> None:
        service = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
        if remote_id == 0:
            return
        handler = self.device.service_handler(service)
        if handler is None:
            log.info("%s: refused service %r", self.peer, service[:80])
            self.send_close(0, remote_id)
            return
        stream = Stream(self, next(self._ids), remote_id, service)
        with self._streams_lock:
            self._streams[stream.local_id] = stream
        self.send(p.A_OKAY, stream.local_id, remote_id)
        threading.Thread(
            target=self._serve, args=(stream, handler),
            name=f"vd-{stream.local_id}-{service.split(':', 1)[0]}", daemon=True,
        ).start()

    def _serve(self, stream: Stream, handler: Handler) -> None:
        try:
            handler(stream)
        except DISCONNECTS:
            pass
        except Exception as exc:  # a bug in a service: one line, the stream still closes
            log.error("service %r failed: %s: %s", stream.service[:80], type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            try:
                stream.close()
            except DISCONNECTS:
                pass


def _sendmsg_all(sock: socket.socket, buffers: list[Buffer]) -> None:
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views)
        while sent and views:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0
