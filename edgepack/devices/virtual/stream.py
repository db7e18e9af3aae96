"""One adb stream (OPEN .. CLSE) as a byte pipe with the protocol's flow control.

Host -> device: each WRTE waits for our OKAY. We OKAY at once while less than IN_WINDOW bytes
wait for the service, so the host sends the next WRTE while the service still works on this one;
past the window the OKAY waits until the service has read enough. That is the only
backpressure the host sees, and it is what a slow disk or a bandwidth cap turns into.

Device -> host: a service's writes queue up (up to OUT_WINDOW, then write() blocks) and go out
as WRTEs of up to the host's max payload, one at a time: the next only after the host's OKAY.
WRTE boundaries carry no meaning (sync and shell v2 records are cut and packed freely), so both
directions are plain byte streams.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgepack.devices.virtual.transport import Connection

Buffer = bytes | bytearray | memoryview


class StreamClosed(Exception):
    """The host closed the stream, or the connection is gone."""


class Stream:
    IN_WINDOW = 4 * 1024 * 1024
    OUT_WINDOW = 2 * 1024 * 1024
    CLOSE_DRAIN_TIMEOUT = 60.0  # a host that neither reads nor closes cannot hold us forever

    def __init__(self, conn: Connection, local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self._cond = threading.Condition()
        self._in: deque[memoryview] = deque()
        self._in_size = 0
        self._owe_okay = False
        self._out: deque[memoryview] = deque()
        self._out_size = 0
        self._can_send = True
        self._peer_closed = False
        self._closed = False
        self._on_peer_close: list[Callable[[], None]] = []

    # ------------------------------------------------------------ from the connection's reader

    def deliver(self, payload: bytes) -> None:
        """A WRTE from the host."""
        with self._cond:
            if self._closed or self._peer_closed:
                return
            if payload:
                self._in.append(memoryview(payload))
                self._in_size += len(payload)
            ack_now = self._in_size <= self.IN_WINDOW
            if not ack_now:
                self._owe_okay = True
            self._cond.notify_all()
        if ack_now:
            self.conn.send_okay(self.local_id, self.remote_id)

    def acknowledged(self) -> None:
        """The host's OKAY for our last WRTE."""
        with self._cond:
            self._can_send = True
            chunk = self._take_chunk()
            self._cond.notify_all()
        if chunk is not None:
            self.conn.send_write(self.local_id, self.remote_id, chunk)

    def peer_closed(self, answer: bool = False) -> None:
        """CLSE from the host (answer=True), or the connection is gone: no more reads or writes.

        A CLSE is answered with ours, as adbd's socket code does, unless we sent ours already:
        deciding under the lock that close() takes means exactly one CLSE leaves in any race.
        """
        with self._cond:
            if self._peer_closed:
                return
            self._peer_closed = True
            answer = answer and not self._closed
            self._out.clear()
            self._out_size = 0
            callbacks = list(self._on_peer_close)
            self._cond.notify_all()
        if answer:
            self.conn.send_close(self.local_id, self.remote_id)
        for callback in callbacks:
            callback()

    # ------------------------------------------------------------ for the service

    @property
    def is_peer_closed(self) -> bool:
        return self._peer_closed

    def on_peer_close(self, callback: Callable[[], None]) -> None:
        with self._cond:
            if not self._peer_closed:
                self._on_peer_close.append(callback)
                return
        callback()

    def read(self, limit: int) -> memoryview | bytes:
        """Up to `limit` bytes as soon as any are there; b"" once either side has closed."""
        with self._cond:
            while not self._in and not self._peer_closed and not self._closed:
                self._cond.wait()
            if not self._in:
                return b""
            head = self._in[0]
            if len(head) <= limit:
                self._in.popleft()
                data = head
            else:
                data = head[:limit]
                self._in[0] = head[limit:]
            self._in_size -= len(data)
            ack = self._release_window()
        if ack:
            self.conn.send_okay(self.local_id, self.remote_id)
        return data

    def read_exact(self, size: int) -> memoryview | bytes:
        """Exactly `size` bytes; EOFError when the host closes first."""
        if size <= 0:
            return b""
        first = self.read(size)
        if len(first) == size:
            return first
        parts = [bytes(first)]
        got = len(first)
        while got < size:
            if not first:
                raise EOFError(f"stream closed {size - got} bytes short")
            first = self.read(size - got)
            parts.append(bytes(first))
            got += len(first)
        return b"".join(parts)

    def write(self, data: Buffer) -> None:
        if not data:
            return
        view = memoryview(data).cast("B")
        with self._cond:
            while (self._out_size >= self.OUT_WINDOW and not self._peer_closed
                   and not self._closed):
                self._cond.wait()
            if self._peer_closed or self._closed:
                raise StreamClosed(self.service)
            self._out.append(view)
            self._out_size += len(view)
            chunk = self._take_chunk() if self._can_send else None
        if chunk is not None:
            self.conn.send_write(self.local_id, self.remote_id, chunk)

    def close(self) -> None:
        """Send what is queued, wait for the host to take it, then CLSE (once)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._peer_closed or (not self._out and self._can_send),
                timeout=self.CLOSE_DRAIN_TIMEOUT,
            )
            if self._closed:
                return
            self._closed = True
            tell_host = not self._peer_closed
            self._cond.notify_all()
        if tell_host:
            self.conn.send_close(self.local_id, self.remote_id)
        self.conn.forget(self)

    # ------------------------------------------------------------ internals (lock held)

    def _release_window(self) -> bool:
        if self._owe_okay and self._in_size <= self.IN_WINDOW:
            self._owe_okay = False
            return True
        return False

    def _take_chunk(self) -> memoryview | bytes | None:
        if not self._out or not self._can_send or self._peer_closed:
            return None
        limit = self.conn.max_send
        head = self._out[0]
        if len(head) >= limit:
            chunk: memoryview | bytes = head[:limit]
            if len(head) == limit:
                self._out.popleft()
            else:
                self._out[0] = head[limit:]
        else:
            parts = []
            size = 0
            while self._out and size + len(self._out[0]) <= limit:
                piece = self._out.popleft()
                parts.append(piece)
                size += len(piece)
            if self._out and size < limit:
                # Fill the WRTE up to the limit with the front of the next piece.
                rest = limit - size
                parts.append(self._out[0][:rest])
                self._out[0] = self._out[0][rest:]
                size = limit
            chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        self._out_size -= len(chunk)
        self._can_send = False
        self._cond.notify_all()
        return chunk
