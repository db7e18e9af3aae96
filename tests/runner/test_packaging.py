"""An installed edgepack (a wheel, no checkout) builds runners from the sources it carries."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgepack.runner import cache, fetch
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the repository, so that the build leaves nothing (build/, egg-info) in this one.
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    if not any(files):
        unavailable("not a git checkout")
    for name in filter(None, files):
        if not (REPO / name).is_file():  # deleted, not yet committed
            continue
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((REPO / name).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("edgepack-*.whl")
    return whl


def test_the_wheel_carries_the_runner_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"edgepack/runner/sources/{p.relative_to(REPO / 'device_scripts/runner')}"
                for p in (REPO / "device_scripts/runner").rglob("*")
                if p.is_file() and p.parts[-2] in ("src", "cmake")}
    assert expected and expected <= names
    assert "edgepack/runner/sources/CMakeLists.txt" in names
    assert not any("fuzz" in n for n in names)


def test_the_wheel_carries_the_browser_page(wheel):
    """`--device browser` serves its harness from the installed package: a wheel without it
    could not run anything in a browser."""
    names = set(zipfile.ZipFile(wheel).namelist())
    page = {f"edgepack/web/page/{p.name}" for p in (REPO / "edgepack/web/page").iterdir()
            if p.is_file()}
    assert "edgepack/web/page/index.html" in page and page <= names


def test_an_installed_edgepack_builds_the_host_runner(wheel, host_runner, tmp_path):
    """Install the wheel on its own (its dependencies are this interpreter's), away from the
    checkout, and build: the runner comes out identical to the checkout's build."""
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                           "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    aar = fetch.resolve_aar(cache.cache_root(), version=fetch.host_library_version(),
                            explicit=None)
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_RUNNER_SRC"}
    env["PYTHONPATH"] = str(site)  # ahead of any installed (editable) edgepack
    env["EDGEPACK_CACHE_DIR"] = str(tmp_path / "cache")
    where = subprocess.run([sys.executable, "-c", "import edgepack.runner.cache as c; "
                            "print(c.runner_sources())"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == site / "edgepack" / "runner" / "sources", where

    build = subprocess.run([sys.executable, "-m", "edgepack", "runner", "build", "--target",
                            "host", "--ort-aar", str(aar.path), "--json"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    built = cache.find_runner("host", root=tmp_path / "cache")
    assert built is not None
    assert built.source_sha256 == host_runner.source_sha256
    assert built.binary.read_bytes() == host_runner.binary.read_bytes()
