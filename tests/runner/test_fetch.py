"""Fetching the AAR and libraries: archive safety, version detection, and how the machine's
reachability picks the source (Maven Central when reachable, else npm) — without the network."""

from __future__ import annotations

import io
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from edgepack.errors import EdgepackError, ExitCode
from edgepack.fileio import sha256_file
from edgepack.runner import fetch

HEADER = "#pragma once\n#define ORT_API_VERSION 29\n"


def make_aar(path: Path, *, version_string: bytes = b"\x001.29.3\x00",
             extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("headers/onnxruntime_c_api.h", HEADER)
        zf.writestr("headers/nnapi_provider_factory.h", "#pragma once\n")
        zf.writestr("jni/arm64-v8a/libonnxruntime.so", b"\x7fELF" + b"\x00" * 100 +
                    version_string + b"\x00" * 100)
        zf.writestr("classes.jar", b"PK")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_safe_member_paths(tmp_path):
    assert fetch.safe_member_path(tmp_path, "headers/x.h") == tmp_path.resolve() / "headers/x.h"
    for bad in ["../evil", "/etc/passwd", "a/../../evil", "", ".", "a\\..\\b", "a\x00b"]:
        with pytest.raises(EdgepackError):
            fetch.safe_member_path(tmp_path, bad)
    # A link already inside the destination that points out of it is refused too.
    (tmp_path / "out").symlink_to("/tmp")
    with pytest.raises(EdgepackError):
        fetch.safe_member_path(tmp_path, "out/x")


def test_zip_traversal_and_links_are_refused(tmp_path):
    evil = tmp_path / "evil.aar"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("headers/ok.h", "ok")
        zf.writestr("../../escaped.h", "bad")
    dest = tmp_path / "dest"
    with pytest.raises(EdgepackError, match="leave the destination"):
        fetch.extract_zip_members(evil, dest, lambda n: True)
    assert not (tmp_path / "escaped.h").exists()

    link = tmp_path / "link.aar"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("headers/onnxruntime_c_api.h")
        info.external_attr = (0o120777 << 16)  # a symlink
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(EdgepackError, match="not a regular file"):
        fetch.extract_zip_members(link, dest, lambda n: True)

    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("headers/huge.h", b"\x00" * 10_000)
    with pytest.raises(EdgepackError, match="bytes"):
        fetch.extract_zip_members(big, dest, lambda n: True, limit=1000)


def test_tar_member_must_be_a_regular_file(tmp_path):
    tgz = tmp_path / "p.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo(fetch.NPM_AAR_MEMBER)
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(EdgepackError, match="not a regular file"):
        fetch.extract_tar_member(tgz, fetch.NPM_AAR_MEMBER, tmp_path / "out.aar")
    ok = tmp_path / "ok.tgz"
    with tarfile.open(ok, "w:gz") as tf:
        data = b"aar bytes"
        info = tarfile.TarInfo(fetch.NPM_AAR_MEMBER)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    out = fetch.extract_tar_member(ok, fetch.NPM_AAR_MEMBER, tmp_path / "sub" / "out.aar")
    assert out.read_bytes() == b"aar bytes"
    with pytest.raises(EdgepackError, match="holds no"):
        fetch.extract_tar_member(ok, "package/other", tmp_path / "x")


def test_inspect_aar_finds_the_version(tmp_path):
    aar = fetch.inspect_aar(make_aar(tmp_path / "onnxruntime.aar"), "--ort-aar")
    assert aar.version == "1.29.3" and aar.source == "--ort-aar"
    named = fetch.inspect_aar(make_aar(tmp_path / "onnxruntime-android-1.29.1.aar",
                                       version_string=b""), "--ort-aar")
    assert named.version == "1.29.1"
    bare = fetch.inspect_aar(make_aar(tmp_path / "x.aar", version_string=b""), "--ort-aar")
    assert bare.version == "1.29.0"  # the API level is the minor version
    not_aar = tmp_path / "n.aar"
    not_aar.write_bytes(b"not a zip")
    with pytest.raises(EdgepackError) as info:
        fetch.inspect_aar(not_aar, "--ort-aar")
    assert info.value.exit_code == ExitCode.BAD_INPUT
    with zipfile.ZipFile(tmp_path / "empty.aar", "w") as zf:
        zf.writestr("classes.jar", b"")
    with pytest.raises(EdgepackError, match="not an onnxruntime-android AAR"):
        fetch.inspect_aar(tmp_path / "empty.aar", "--ort-aar")
    with pytest.raises(EdgepackError, match="no such file"):
        fetch.inspect_aar(tmp_path / "absent.aar", "--ort-aar")


def test_headers_and_android_library_extraction(tmp_path):
    aar = fetch.inspect_aar(make_aar(tmp_path / "o.aar"), "--ort-aar")
    headers = fetch.extract_headers(aar, tmp_path / "cache")
    assert headers.api_version == 29 and headers.ort_version == "1.29.3"
    assert sorted(p.name for p in headers.include_dir.iterdir()) == [
        "nnapi_provider_factory.h", "onnxruntime_c_api.h"]
    lib = fetch.extract_android_library(aar, "arm64-v8a", tmp_path / "cache")
    assert lib.name == "libonnxruntime.so" and lib.parent.name == "arm64-v8a"
    with pytest.raises(EdgepackError, match="x86"):
        fetch.extract_android_library(aar, "x86", tmp_path / "cache")


def test_explicit_aar_wins(tmp_path, monkeypatch):
    aar_path = make_aar(tmp_path / "given.aar")
    monkeypatch.setattr(fetch, "_fetch_maven", _fail_if_called)
    monkeypatch.setattr(fetch, "_fetch_npm", _fail_if_called)
    assert fetch.resolve_aar(tmp_path, version="1.32.0", explicit=aar_path).source == "--ort-aar"
    monkeypatch.setenv("EDGEPACK_ORT_AAR", str(aar_path))
    assert fetch.resolve_aar(tmp_path, version="1.32.0").path == aar_path


def _fail_if_called(*args, **kwargs):
    raise AssertionError("must not be called")


def _unreachable(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_unreachable_maven_falls_back_to_npm(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEPACK_ORT_AAR", raising=False)
    monkeypatch.delenv("EDGEPACK_AAR_SOURCE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _unreachable)
    sentinel = fetch.OrtAar(tmp_path / "npm.aar", fetch.NPM_AAR_VERSION, "npm", "0" * 64)
    seen = {}

    def fake_npm(aar_dir, log, maven_reason):
        seen["reason"] = maven_reason
        return sentinel

    monkeypatch.setattr(fetch, "_fetch_npm", fake_npm)
    logs: list[str] = []
    assert fetch.resolve_aar(tmp_path, version="1.32.0", log=logs.append) is sentinel
    assert "Name or service not known" in seen["reason"]
    assert any("no AAR from Maven Central" in line and "npm" in line for line in logs)
    # Forced to Maven, unreachability is an error naming the cause.
    with pytest.raises(EdgepackError) as info:
        fetch.resolve_aar(tmp_path, version="1.32.0", source="maven")
    assert info.value.exit_code == ExitCode.DEVICE and "Maven Central" in info.value.message
    with pytest.raises(EdgepackError) as info:
        fetch.resolve_aar(tmp_path, version="1.32.0", source="ftp")
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_reachable_maven_is_used_and_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEPACK_ORT_AAR", raising=False)
    aar_bytes = make_aar(tmp_path / "src.aar").read_bytes()
    import hashlib

    sha1 = hashlib.sha1(aar_bytes).hexdigest()

    def fake_urlopen(url, timeout):
        assert timeout == fetch.MAVEN_TIMEOUT_S and url.startswith("https://repo1.maven.org/")
        return io.BytesIO((sha1 + "\n").encode() if url.endswith(".sha1") else aar_bytes)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(fetch, "_fetch_npm", _fail_if_called)
    got = fetch.resolve_aar(tmp_path / "cache", version="1.31.0")
    assert got.source == "maven" and got.version == "1.31.0"
    assert got.path.read_bytes() == aar_bytes
    # Cached: no second download.
    monkeypatch.setattr(urllib.request, "urlopen", _fail_if_called)
    assert fetch.resolve_aar(tmp_path / "cache", version="1.31.0").path == got.path

    def corrupt(url, timeout):
        return io.BytesIO(b"0" * 40 if url.endswith(".sha1") else aar_bytes)

    monkeypatch.setattr(urllib.request, "urlopen", corrupt)
    with pytest.raises(EdgepackError, match="sha1"):
        fetch.resolve_aar(tmp_path / "cache2", version="1.31.0")
    assert not any((tmp_path / "cache2").glob("downloads/aar/*.aar"))


def test_cached_npm_aar_is_verified(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEPACK_ORT_AAR", raising=False)
    target = tmp_path / "downloads" / "aar" / f"onnxruntime-android-{fetch.NPM_AAR_VERSION}.npm.aar"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"tampered")
    with pytest.raises(EdgepackError, match="sha256"):
        fetch.resolve_aar(tmp_path, version=None, source="npm")


def test_npm_missing_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEPACK_ORT_AAR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(EdgepackError) as info:
        fetch.resolve_aar(tmp_path, version=None, source="npm")
    assert info.value.exit_code == ExitCode.DEVICE and "--ort-aar" in info.value.message


def test_host_library_and_elf_machine():
    lib = fetch.host_library()
    import onnxruntime

    assert lib.version == onnxruntime.__version__
    assert lib.machine == "x86_64" and lib.path.name == f"libonnxruntime.so.{lib.version}"
    assert fetch.elf_machine(Path(os.devnull)) is None


def test_real_npm_aar_in_the_cache_matches_the_pin(host_runner):
    """The AAR the host runner was built with (fetched by the session fixture if it was missing)
    is the pinned one, when it came from npm."""
    from edgepack.runner.cache import cache_root

    name = f"onnxruntime-android-{fetch.NPM_AAR_VERSION}.npm.aar"
    aar = cache_root() / "downloads" / "aar" / name
    if host_runner.headers_version != fetch.NPM_AAR_VERSION or not aar.is_file():
        pytest.skip("the host runner was built with another AAR")
    assert sha256_file(aar) == fetch.NPM_AAR_SHA256
