"""The loopback server and the runtime cache behind the browser target (no Chromium needed)."""

from __future__ import annotations

import http.client
import io
import os
import shutil
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgepack.errors import EdgepackError, ExitCode
from edgepack.web import runtime as rt
from edgepack.web.server import WebServer


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def _post(srv: WebServer, path: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("POST", path, body=body)
        return conn.getresponse().status
    except (ConnectionResetError, BrokenPipeError):
        return -1
    finally:
        conn.close()


@pytest.fixture
def server(tmp_path):
    with WebServer(max_result_bytes=1024) as srv:
        yield srv


def test_token_and_only_registered_files(server, tmp_path):
    (tmp_path / "secret.txt").write_text("not served")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07model")
    server.register("run/m.onnx", model)
    server.register("rt/ort.wasm.min.mjs", b"export {};")
    code, body, headers = _get(server.url("run/m.onnx"))
    assert code == 200 and body == b"\x08\x07model"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
    code, _, headers = _get(server.url("rt/ort.wasm.min.mjs"))
    assert code == 200 and headers["Content-Type"].startswith("text/javascript")
    # Without the token, with another token, or a path that is not registered: 404.
    assert _get(f"{server.origin}/run/m.onnx")[0] == 404
    assert _get(f"{server.origin}/{'x' * 24}/run/m.onnx")[0] == 404
    assert _get(server.url("run/secret.txt"))[0] == 404
    assert _get(server.url("run/../run/m.onnx"))[0] == 404
    assert _get(server.origin + server.path("run") + "/%2e%2e/secret.txt")[0] == 404
    assert _get(server.url(str(tmp_path / "secret.txt")))[0] == 404


def test_results_go_only_to_open_slots_and_are_capped(server):
    path = server.open_slot("r1-0-0")
    assert _post(server, path, b"\x00\x01") == 204
    assert server.take_result("r1-0-0") == b"\x00\x01"
    assert _post(server, server.path("result/r9-0-0"), b"x") == 404  # never opened
    assert _post(server, "/result/r1-0-0", b"x") == 404  # no token
    server.open_slot("r1-0-1")
    assert _post(server, server.path("result/r1-0-1"), b"x" * 2048) in (413, -1)
    assert server.take_result("r1-0-1") is None
    server.open_slot("r1-1-0")
    server.close_slots("r1-")
    assert _post(server, server.path("result/r1-1-0"), b"x") == 404  # closed with its run


def test_a_large_file_is_streamed_not_read_into_memory(tmp_path):
    big = tmp_path / "init.bin"
    with open(big, "wb") as fh:  # sparse: costs no disk
        fh.truncate(512 << 20)

    def hwm_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    with WebServer() as srv:
        srv.register("run/init.bin", big)
        before = hwm_kb()
        total = 0
        with urllib.request.urlopen(srv.url("run/init.bin"), timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                total += len(chunk)
        assert total == 512 << 20
        assert hwm_kb() - before < 200_000  # far below the file's 524,288 KiB


def test_the_port_closes_on_stop():
    srv = WebServer().start()
    port = srv.port
    srv.stop()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()


# ------------------------------------------------------------------------ the runtime cache


def _pinned_tarball(name: str) -> Path:
    """The real pinned tarball from the user's cache (setup fetched it), or skip."""
    real = Path(os.environ.get("HOME", "~")).expanduser() / ".cache" / "edgepack" / "web"
    path = real / "downloads" / rt.PINS[name].tarball_name
    if not path.is_file():
        try:
            rt.web_runtime(name)
        except EdgepackError as exc:
            pytest.skip(f"no {name} tarball: {exc.message}")
        path = rt.web_dir() / "downloads" / rt.PINS[name].tarball_name
    return path


def test_cached_tarball_is_used_without_npm_and_extracted_once(tmp_path, monkeypatch):
    tgz = _pinned_tarball("onnxjs")
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no npm: nothing may download
    (tmp_path / "cache" / "web" / "downloads").mkdir(parents=True)
    shutil.copy(tgz, tmp_path / "cache" / "web" / "downloads" / tgz.name)
    got = rt.web_runtime("onnxjs")
    assert got.root == tmp_path / "cache" / "web" / "onnxjs-0.1.8" / "package"
    assert (got.root / "dist" / "onnx.min.js").is_file()
    # Once extracted, the tarball is not needed again.
    (tmp_path / "cache" / "web" / "downloads" / tgz.name).unlink()
    assert rt.web_runtime("onnxjs") == got


def test_a_tampered_cached_tarball_is_refused(tmp_path, monkeypatch):
    tgz = _pinned_tarball("onnxjs")
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    downloads = tmp_path / "cache" / "web" / "downloads"
    downloads.mkdir(parents=True)
    data = bytearray(tgz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (downloads / tgz.name).write_bytes(bytes(data))
    with pytest.raises(EdgepackError) as err:
        rt.web_runtime("onnxjs")
    assert err.value.exit_code == ExitCode.DEVICE and "sha256" in err.value.message
    assert not (tmp_path / "cache" / "web" / "onnxjs-0.1.8").exists()


def _tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


@pytest.mark.parametrize("name", ["package/../../escaped.txt", "/tmp/escaped.txt",
                                  "../escaped.txt"])
def test_an_archive_member_escaping_its_directory_is_refused(tmp_path, name):
    archive = _tar(tmp_path / "evil.tgz", [_file("package/ok.txt"), _file(name)])
    dest = tmp_path / "out" / "x"
    dest.mkdir(parents=True)
    with pytest.raises(EdgepackError) as err:
        rt.extract_all(archive, dest)
    assert "leave the destination" in err.value.message
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "escaped.txt").exists()


def test_links_in_an_archive_are_refused(tmp_path):
    link = tarfile.TarInfo("package/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = _tar(tmp_path / "link.tgz", [link])
    with pytest.raises(EdgepackError) as err:
        rt.extract_all(archive, tmp_path / "out")
    assert "not a regular file" in err.value.message


def test_concurrent_readers_do_not_race(tmp_path, monkeypatch):
    tgz = _pinned_tarball("onnxjs")
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    downloads = tmp_path / "cache" / "web" / "downloads"
    downloads.mkdir(parents=True)
    shutil.copy(tgz, downloads / tgz.name)
    errors: list[BaseException] = []

    def go() -> None:
        try:
            rt.web_runtime("onnxjs")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    root = tmp_path / "cache" / "web" / "onnxjs-0.1.8" / "package"
    assert (root / "dist" / "onnx.min.js").is_file()
