"""`edgepack runner build` and `edgepack runner list` through the real entry point."""

from __future__ import annotations

import sys

from tests.conftest import run_cli, run_cli_subprocess


def test_build_host_json_reuses_the_cached_runner(host_runner):
    r = run_cli("runner", "build", "--target", "host", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["id"] == host_runner.id and doc["directory"] == str(host_runner.directory)
    assert doc["push_files"] == ["edgepack-runner", "libonnxruntime.so.1"]


def test_build_host_human_output_names_the_commands(host_runner):
    r = run_cli("runner", "build", "--target", "host")
    assert r.code == 0
    assert host_runner.id in r.stdout and "cmake -S" in r.stdout


def test_list(host_runner):
    r = run_cli("runner", "list", "--json")
    assert r.code == 0
    rows = {row["id"]: row for row in r.json()}
    assert rows[host_runner.id]["status"] == "ok"
    assert rows[host_runner.id]["target"] == "host"
    human = run_cli("runner", "list")
    assert human.code == 0 and "host" in human.stdout


def test_unknown_target_is_bad_input():
    r = run_cli("runner", "build", "--target", "riscv")
    assert r.code == 2
    assert r.stderr.strip().startswith("edgepack: error: unknown runner target 'riscv'")
    assert len(r.stderr.strip().splitlines()) == 1


def test_android_without_ndk_is_bad_input(monkeypatch, tmp_path):
    for var in ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK"):
        monkeypatch.delenv(var, raising=False)
    r = run_cli("runner", "build", "--target", "android-arm64-v8a")
    assert r.code == 2 and "--ndk" in r.stderr
    r = run_cli("runner", "build", "--target", "android-arm64-v8a", "--ndk", tmp_path)
    assert r.code == 2 and "not an Android NDK" in r.stderr


def test_missing_aar_is_bad_input(tmp_path):
    r = run_cli("runner", "build", "--target", "host", "--force", "--ort-aar", tmp_path / "x.aar")
    assert r.code == 2 and "no such file" in r.stderr


def test_runner_commands_import_nothing_heavy():
    code = ("import sys; import edgepack.cli.runner; "
            "print([m for m in ('numpy', 'onnx', 'onnxruntime', 'torch') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_runner_commands():
    r = run_cli_subprocess("runner", "--help")
    assert r.code == 0 and "build" in r.stdout and "list" in r.stdout
