"""`edgepack bench` and `edgepack history` through the real entry point, on the host."""

from __future__ import annotations

from tests.conftest import run_cli


def test_bench_on_the_host_stores_runs_and_writes_reports(lab_bundle, tmp_path):
    db, reports = tmp_path / "h.db", tmp_path / "reports"
    r = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat", "2",
                "--iterations", "8", "--threads", "1,2", "--profile", "--top", "2", "--db", db,
                "--label", "main", "--report-dir", reports, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["schema"] == "edgepack-report/1" and doc["label"] == "main"
    # Profiled runs are keyed apart: profiling slows them.
    assert [g["config_key"] for g in doc["results"]] == ["cpu/t1/profile", "cpu/t2/profile"]
    assert all(g["outcome"] == "pass" and g["latency_ms"]["count"] == 16 for g in doc["results"])
    assert len(doc["results"][0]["profile"]) == 2  # --top 2
    assert doc["results"][0]["profile"][0]["iterations"] == 16  # 2 repeats x 8 timed
    assert sorted(p.name for p in reports.iterdir()) == ["junit.xml", "report.html",
                                                          "report.json", "report.md"]

    listed = run_cli("history", "--db", db, "--bundle", lab_bundle, "--json")
    assert listed.code == 0, listed.stderr
    runs = listed.json()["runs"]
    assert len(runs) == 4 and {r["label"] for r in runs} == {"main"}
    assert len(runs[0]["latencies_ms"]) == 8
    # The device is listed as a record; the stored whole result is storage, not listing.
    assert runs[0]["device"]["serial"] == "host" and "result_json" not in runs[0]
    human = run_cli("history", "--db", db, "--since", "1h", "--device", "host")
    assert human.code == 0 and "picture" in human.stdout and "cpu/t2" in human.stdout
    none = run_cli("history", "--db", db, "--bundle", "nosuchbundle")
    assert none.code == 0 and "no runs" in none.stdout

    text = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat",
                   "1", "--iterations", "3", "--db", db)
    assert text.code == 0, text.stderr
    assert "latency (ms)" in text.stdout and "1 passed" in text.stdout
    assert "[1/1] host picture cpu/t1 run 1: pass" in text.stderr  # progress, on stderr


def test_a_lab_files_defaults_apply_and_its_errors_name_the_line(lab_bundle, tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text("[defaults]\niterations = 7\nrepeat = 1\nthreads = [2]\n")
    r = run_cli("bench", lab_bundle, "--lab", lab, "--device", "host", "--engine", "python",
                "--db", tmp_path / "h.db", "--json")
    assert r.code == 0, r.stderr
    (group,) = r.json()["results"]
    assert group["config_key"] == "cpu/t2" and group["latency_ms"]["count"] == 7
    # The command line wins over the file.
    r = run_cli("bench", lab_bundle, "--lab", lab, "--device", "host", "--engine", "python",
                "--iterations", "3", "--db", tmp_path / "h.db", "--json")
    assert r.json()["results"][0]["latency_ms"]["count"] == 3

    lab.write_text("[defaults]\nrepeat = 1\niterations = \"many\"\n")
    bad = run_cli("bench", lab_bundle, "--lab", lab, "--device", "host")
    assert bad.code == 2
    assert f"{lab}:3: defaults.iterations: expected an integer >= 1, not 'many'" in bad.stderr


def test_bad_options_are_bad_input(lab_bundle, tmp_path):
    for args, message in (
        (["--ep", "cpu,gpu"], "unknown execution provider 'gpu'"),
        (["--threads", "one"], "--threads 'one': expected integers"),
        (["--cpu-affinity", "xyz"], "not a CPU mask"),
        (["--repeat", "0"], "Invalid value for '--repeat'"),
    ):
        r = run_cli("bench", lab_bundle, "--device", "host", "--db", tmp_path / "h.db", *args)
        assert r.code == 2 and message in r.stderr, (args, r.stderr)


def test_a_missing_device_is_reported_while_the_host_runs(lab_bundle, tmp_path, monkeypatch):
    # No adb here: the inventory of the adb servers is empty (a real one could start a server).
    monkeypatch.setattr("edgepack.lab.inventory", lambda servers, only=None: ([], []))
    r = run_cli("bench", lab_bundle, "--device", "host,R58M41", "--engine", "python",
                "--repeat", "1", "--iterations", "3", "--db", tmp_path / "h.db",
                "--report-dir", tmp_path / "rep", "--json")
    assert r.code == 3, r.stderr
    devices = {d["serial"]: d for d in r.json()["devices"]}
    assert devices["host"]["status"] == "ok"
    assert devices["R58M41"]["status"] == "error"
    assert "device R58M41 is not attached" in devices["R58M41"]["error"]
    assert 'errors="1"' in (tmp_path / "rep" / "junit.xml").read_text()


def test_the_lab_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, edgepack.bench, edgepack.history, edgepack.regress, edgepack.lab, "
            "edgepack.labrun, edgepack.option_values, "
            "edgepack.report.html_report, edgepack.report.junit, edgepack.report.json_report, "
            "edgepack.report.images, edgepack.cli.lab; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_bench_and_regress_share_one_declaration_of_their_options():
    import typer.main

    from edgepack.cli.app import app
    from edgepack.cli.options import LAB_OPTIONS

    commands = typer.main.get_command(app).commands

    names = [name for name, _, _ in LAB_OPTIONS]

    def shared(command):
        return {p.name: (p.opts, p.help, p.default, p.min, p.max, p.metavar)
                for p in commands[command].params if p.name in names}

    assert list(shared("bench")) == names
    assert shared("bench") == shared("regress")


def test_regress_layers_the_lab_file_as_bench_does(lab_bundle, tmp_path):
    lab, db = tmp_path / "lab.toml", tmp_path / "h.db"
    # repeat = 2: regress judges latency over runs, and an interval needs two a side.
    lab.write_text("[defaults]\nrepeat = 2\niterations = 6\nthreads = 2\n"
                   "threshold_percent = 400\nalpha = 0.05\n")
    common = [lab_bundle, "--lab", lab, "--device", "host", "--engine", "python", "--db", db]
    base = run_cli("bench", *common, "--label", "base", "--json")
    assert base.code == 0, base.stderr
    assert [(g["config_key"], g["latency_ms"]["count"]) for g in base.json()["results"]] == [
        ("cpu/t2", 12)]
    r = run_cli("regress", *common, "--baseline", "label:base", "--iterations", "7", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert (doc["threshold"], doc["alpha"], doc["compared"]) == (4.0, 0.05, 1)
    (c,) = doc["comparisons"]
    assert c["config_key"] == "cpu/t2"  # the file's threads, and the command line's iterations:
    assert (c["latency"]["n_candidate"], c["latency"]["n_baseline"]) == (14, 12)
    over = run_cli("regress", *common, "--baseline", "label:base", "--from-history",
                   "--threshold", "300", "--alpha", "0.2", "--json")
    assert over.code == 0, over.stderr
    assert (over.json()["threshold"], over.json()["alpha"]) == (3.0, 0.2)
