"""Validity beside every figure (markdown, HTML, JUnit, JSON, the console), bench's and
regress's --min-iterations / --min-seconds / --max-seconds and --cooldown auto (also from
lab.toml), and an `ab` session's per-round ratios in the HTML report written from history."""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET

from edgepack.lab import GivenOptions, layer_settings
from tests.conftest import run_cli


def test_every_report_shows_validity_beside_the_figures(lab_bundle, tmp_path):
    reports = tmp_path / "reports"
    # A 1 ms cap no run keeps: every run is semivalid, with the reason.
    r = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat", "2",
                "--iterations", "3", "--max-seconds", "0.001", "--db", tmp_path / "h.db",
                "--report-dir", reports, "--json")
    assert r.code == 0, r.stderr
    (g,) = r.json()["results"]
    assert g["validity"]["verdict"] == "semivalid", g["validity"]
    assert "past the 0.001 s cap (2 of 2 runs)" in g["validity"]["reasons"][0]
    md = (reports / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| host |"))
    assert "⚠️ semivalid" in row
    assert "semivalid: ran " in md and "past the 0.001 s cap" in md
    html = (reports / "report.html").read_text()
    # In the latency table, beside the outcome; the reasons (a tooltip, and listed below).
    assert re.search(r"pass</span></td><td><span class='warn' title='[^']*cap[^']*'>semivalid"
                     r"</span></td><td class='n'>2/2</td>", html), html[:3000]
    case = next(ET.parse(reports / "junit.xml").getroot().iter("testcase"))
    props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    assert ("validity", "semivalid") in props
    assert any(n == "validity_reason" and "cap" in v for n, v in props), props
    assert "(semivalid (ran " in case.find("system-out").text
    # And the console's table.
    text = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat",
                   "2", "--iterations", "3", "--min-seconds", "1000", "--db", tmp_path / "h.db")
    assert text.code == 0, text.stderr
    assert "invalid" in text.stdout and "less than the minimum 1000 s" in text.stdout


def test_regress_leaves_out_runs_below_the_minimums(lab_bundle, tmp_path):
    common = [lab_bundle, "--device", "host", "--engine", "python", "--db", tmp_path / "h.db",
              "--iterations", "3"]
    assert run_cli("bench", *common, "--label", "base").code == 0
    r = run_cli("regress", *common, "--baseline", "label:base", "--min-seconds", "1000",
                "--json")
    # Every run on both sides is invalid: nothing to judge latency on, and it says why.
    (c,) = r.json()["comparisons"] if r.code == 0 else [None]
    assert c is not None, r.stderr
    assert c["latency"] is None and "invalid candidate run(s) not used" in c["note"], c


def test_bad_validity_options_are_one_line_and_exit_2(lab_bundle, tmp_path):
    for args, words in ((["--iterations", "5", "--min-iterations", "10"], "--min-iterations"),
                        (["--max-seconds", "0"], "--max-seconds"),
                        (["--min-seconds", "-1"], "--min-seconds"),
                        (["--cooldown", "soon"], "--cooldown")):
        r = run_cli("bench", lab_bundle, "--device", "host", "--db", tmp_path / "h.db", *args)
        assert r.code == 2 and words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_lab_toml_carries_the_minimums_and_cooldown_auto(tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text('[defaults]\ncooldown = "auto"\nmin_iterations = 20\nmin_seconds = 0.5\n'
                   "max_seconds = 30\niterations = 40\n")
    p = layer_settings(GivenOptions(lab=lab)).params
    assert (p.cooldown_auto, p.cooldown_s, p.min_iterations, p.min_seconds, p.max_seconds) == (
        True, 0.0, 20, 0.5, 30.0)
    # The command line wins: a number of seconds turns auto off.
    p = layer_settings(GivenOptions(lab=lab, cooldown="2", min_iterations=5)).params
    assert (p.cooldown_auto, p.cooldown_s, p.min_iterations) == (False, 2.0, 5)
    assert layer_settings(GivenOptions(cooldown="auto")).params.cooldown_auto
    lab.write_text("[defaults]\nmax_seconds = 0\n")
    r = run_cli("bench", tmp_path, "--lab", lab, "--device", "host")
    assert r.code == 2 and "defaults.max_seconds" in r.stderr, r.stderr


def test_bench_cooldown_auto_waits_for_the_device_and_records_it(
        virtual_devices, host_runner, lab_bundle, tmp_path, monkeypatch):
    from edgepack.bench import device_target, run_bench
    from edgepack.bundle import load_bundle
    from edgepack.devices.adb import AdbDevice
    from edgepack.records import BenchListener, BenchParams
    from edgepack.validity import judge_run

    dev = virtual_devices.start()

    class HeatDuringTheFirstRun(BenchListener):
        """Hot from the first run's start; back to normal 2.5 s after it ended (timed from
        its end: a first deploy on a busy machine can take seconds)."""

        def on_run_start(self, serial, bundle, config, repeat) -> None:  # noqa: ANN001
            if repeat == 0:
                dev.device.set_thermal(status=2)

        def on_run_end(self, run) -> None:  # noqa: ANN001
            if run.repeat == 0:
                threading.Timer(2.5, lambda: dev.device.set_thermal(status=0)).start()

    params = BenchParams(repeat=2, iterations=3, cooldown_auto=True)
    result = run_bench([load_bundle(lab_bundle)], [device_target(AdbDevice(dev.serial))],
                       params, [HeatDuringTheFirstRun()], work_dir=tmp_path / "w")
    first, second = result.runs
    assert first.cooldown_waited_s == 0 and not first.cooldown_cut
    assert second.cooldown_waited_s >= 1.0 and not second.cooldown_cut, second
    assert not any("cooldown" in x for x in judge_run(second, params.rules()).reasons)
    # A device that stays hot: the wait gives up (bounded), the run is semivalid and says so,
    # in a warning too (which the history keeps).
    import edgepack.bench

    monkeypatch.setattr(edgepack.bench, "AUTO_COOLDOWN_MAX_S", 1.0)

    class StayHot(BenchListener):
        def on_run_start(self, serial, bundle, config, repeat) -> None:  # noqa: ANN001
            dev.device.set_thermal(status=3)

    result = run_bench([load_bundle(lab_bundle)], [device_target(AdbDevice(dev.serial))],
                       params, [StayHot()], work_dir=tmp_path / "w2")
    dev.device.set_thermal(status=0)
    second = result.runs[1]
    assert second.cooldown_cut and 1.0 <= second.cooldown_waited_s < 10, second
    v = judge_run(second, params.rules())
    assert v.verdict.value == "semivalid" and any("cooldown cut short" in x for x in v.reasons)
    assert any("--cooldown auto gave up" in w for w in second.warnings), second.warnings


def test_an_ab_session_from_history_plots_its_rounds(tmp_path):
    from tests.lab.test_ab import pack_chain

    a = pack_chain(tmp_path, "a", 4)
    b = pack_chain(tmp_path, "b", 8)
    db = tmp_path / "h.db"
    r = run_cli("ab", a, b, "--device", "host", "--iterations", "5", "--min-rounds", "3",
                "--max-rounds", "3", "--db", db, "--label", "ab1", "--json")
    assert r.code == 0, r.stderr
    reports = tmp_path / "reports"
    # An A/A-free baseline for regress: the same session is the candidate; label it apart.
    assert run_cli("bench", a, "--device", "host", "--iterations", "5", "--repeat", "2",
                   "--db", db, "--label", "base").code == 0
    g = run_cli("regress", b, "--baseline", "label:base", "--from-history", "--device", "host",
                "--db", db, "--report-dir", reports, "--threshold", "10000")
    assert (reports / "report.html").is_file(), g.stderr
    html = (reports / "report.html").read_text()
    assert "A/B rounds" in html and "per-round ratio of medians" in html
    assert html.count("round 2: ") >= 1
