"""The loopback HTTP server a browser run loads everything from.

Only what a run registers is served: a dict from URL path to a file (or bytes) decides, and no
path is ever built from the request. Every URL starts with a random token, so another local
process, which can reach 127.0.0.1 but does not know the token, can neither read a bundle nor
post a result. Files are streamed in chunks (a 2 GiB init.bin is never held in memory). The
headers make the page cross-origin isolated (COOP/COEP, and CORP on every response), which
onnxruntime-web needs for SharedArrayBuffer and so for WASM threads. The page posts its outputs
back as raw bytes to result slots a run opens, each post size-capped.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".map": "application/json",
}
DEFAULT_MIME = "application/octet-stream"
MAX_RESULT_BYTES = 1 << 30  # one posted output; a model's outputs are far below this
CHUNK = 1 << 20
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,200}")


@dataclass(frozen=True)
class _Entry:
    path: Path | None
    data: bytes | None
    mime: str


class WebServer:
    """A ThreadingHTTPServer on 127.0.0.1, a random port and a random URL token."""

    def __init__(self, max_result_bytes: int = MAX_RESULT_BYTES) -> None:
        self.token = secrets.token_urlsafe(18)
        self.max_result_bytes = max_result_bytes
        self._files: dict[str, _Entry] = {}
        self._slots: set[str] = set()  # result keys a run expects
        self._results: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> WebServer:
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgepack-web",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the web server is not running")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ what is served

    def register(self, name: str, source: Path | bytes, mime: str | None = None) -> str:
        """Serve `source` at /<token>/<name>; returns that absolute URL path."""
        name = name.lstrip("/")
        if not name or ".." in name.split("/"):
            raise ValueError(f"bad URL name {name!r}")
        if mime is None:
            mime = MIME_TYPES.get(Path(name).suffix.lower(), DEFAULT_MIME)
        entry = (_Entry(None, bytes(source), mime) if isinstance(source, bytes | bytearray)
                 else _Entry(Path(source), None, mime))
        key = self.path(name)
        with self._lock:
            self._files[key] = entry
        return key

    def unregister(self, prefix: str) -> None:
        """Stop serving every name under `prefix`."""
        full = self.path(prefix)
        with self._lock:
            for key in [k for k in self._files if k.startswith(full)]:
                del self._files[key]

    def close_slots(self, prefix: str) -> None:
        """Drop the result slots whose keys start with `prefix`, and what was posted to them."""
        with self._lock:
            self._slots = {k for k in self._slots if not k.startswith(prefix)}
            for key in [k for k in self._results if k.startswith(prefix)]:
                del self._results[key]

    def path(self, name: str) -> str:
        return f"/{self.token}/{name.lstrip('/')}"

    def url(self, name: str) -> str:
        return self.origin + self.path(name)

    def open_slot(self, key: str) -> str:
        """Let the page post one result under `key`; returns the URL path to post to."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"bad result key {key!r}")
        with self._lock:
            self._slots.add(key)
        return self.path(f"result/{key}")

    def take_result(self, key: str) -> bytes | None:
        with self._lock:
            return self._results.pop(key, None)

    # ------------------------------------------------------------------ the handler's side

    def _lookup(self, path: str) -> _Entry | None:
        with self._lock:
            return self._files.get(path)

    def _accept(self, path: str) -> str | None:
        """The slot key a POST to `path` fills, or None when no run opened it."""
        prefix = self.path("result/")
        if not path.startswith(prefix):
            return None
        key = path[len(prefix):]
        with self._lock:
            return key if key in self._slots and key not in self._results else None

    def _store(self, key: str, data: bytes) -> None:
        with self._lock:
            self._results[key] = data


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def handle_error(self, request: object, client_address: object) -> None:
        # A page closed mid-transfer (the run ended, Chromium was stopped) is not our error.
        pass


def _handler_for(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "edgepack"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _headers(self, status: int, mime: str, length: int) -> None:
            self.send_response(status)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(length))
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()

        def _refuse(self, status: int) -> None:
            body = f"{status.value} {status.phrase}\n".encode()  # type: ignore[attr-defined]
            self._headers(status, "text/plain; charset=utf-8", len(body))
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self, with_body: bool) -> None:
            entry = server._lookup(urlsplit(self.path).path)
            if entry is None:
                self._refuse(HTTPStatus.NOT_FOUND)
                return
            if entry.data is not None:
                self._headers(HTTPStatus.OK, entry.mime, len(entry.data))
                if with_body:
                    self.wfile.write(entry.data)
                return
            assert entry.path is not None
            try:
                fh = open(entry.path, "rb")
            except OSError:
                self._refuse(HTTPStatus.NOT_FOUND)
                return
            with fh:
                size = os.fstat(fh.fileno()).st_size
                self._headers(HTTPStatus.OK, entry.mime, size)
                if with_body:
                    shutil.copyfileobj(fh, self.wfile, CHUNK)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(False)

        def do_POST(self) -> None:  # noqa: N802
            key = server._accept(urlsplit(self.path).path)
            if key is None:
                self._refuse(HTTPStatus.NOT_FOUND)
                self.close_connection = True
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._refuse(HTTPStatus.LENGTH_REQUIRED)
                self.close_connection = True
                return
            if length < 0 or length > server.max_result_bytes:
                self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                self.close_connection = True
                return
            data = self.rfile.read(length)
            if len(data) != length:
                self.close_connection = True
                return
            server._store(key, data)
            self._headers(HTTPStatus.NO_CONTENT, "text/plain", 0)

        def _not_allowed(self) -> None:
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED)

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    return Handler

