"""Reports: junit.xml counts, report.json's schema, report.md, and report.html in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgepack.bench import host_target, run_bench
from edgepack.bundle import load_bundle
from edgepack.errors import EdgepackError, ExitCode
from edgepack.history import HistoryListener, HistoryStore
from edgepack.records import BenchParams
from edgepack.regress import compare_runs, resolve_baseline
from edgepack.report import REPORT_FILES, build_report, write_reports
from edgepack.report.images import as_image, compare_images
from tests.lab.conftest import FakePhone, deploy_result, samples


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def crash(config):
    raise EdgepackError("A3: runner failed (run_failure): \x1b[31mSIGSEGV\x1b[0m", ExitCode.DEVICE)


@pytest.fixture
def lab_report(bundle, tmp_path):
    """Four phones, two configurations each: A passes, B mismatches, C fails to run, D is
    slower than the baseline on one configuration."""
    def slow_on_t2(config):
        scale = 1.3 if config.threads == 2 else 1.0
        return deploy_result("D", [x * scale for x in samples(config.threads + 7,
                                                              config.iterations)],
                             model="Pixel 8", config=config)

    params = BenchParams(repeat=2, iterations=30, threads=(1, 2), probe_state=False)
    with HistoryStore.open(tmp_path / "h.db") as store:
        run_bench([bundle], [FakePhone("D", model="Pixel 8").target()], params,
                  [HistoryListener(store)], work_dir=tmp_path / "w0", label="main")
        phones = [FakePhone("A"), FakePhone("B", run=lambda c: deploy_result(
            "B", samples(1, c.iterations), passed=False, config=c)),
            FakePhone("C", run=crash), FakePhone("D", model="Pixel 8", run=slow_on_t2)]
        result = run_bench([bundle], [p.target() for p in phones], params,
                           [HistoryListener(store)], work_dir=tmp_path / "w1", label="pr")
        regression = compare_runs(store, store.runs(session=result.session),
                                  resolve_baseline(store, "label:main"))
        data = build_report(result, regression=regression, store=store)
        paths = write_reports(data, tmp_path / "report")
    return data, paths


def test_junit_parses_and_counts(lab_report):
    data, paths = lab_report
    root = ET.parse(paths[1]).getroot()
    assert root.tag == "testsuites"
    # 4 devices x 1 bundle x 2 configurations; B's two mismatch and D's t2 regressed; C's two
    # could not run.
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("8", "3", "2")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "edgepack.picture"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "3", "2")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert len(cases) == 8
    assert cases[("picture.A", "cpu/t1")].find("failure") is None
    assert cases[("picture.A", "cpu/t1")].find("error") is None
    mismatch = cases[("picture.B", "cpu/t2")].find("failure")
    assert mismatch is not None and mismatch.get("type") == "mismatch"
    assert "7 of 784 elements" in mismatch.text
    error = cases[("picture.C", "cpu/t1")].find("error")
    assert error is not None and error.get("type") == "device" and "SIGSEGV" in error.get(
        "message")
    regression = cases[("picture.D", "cpu/t2")].find("failure")
    assert regression is not None and regression.get("type") == "regression"
    assert cases[("picture.D", "cpu/t1")].find("failure") is None
    assert "latency ms: median" in cases[("picture.A", "cpu/t1")].find("system-out").text
    counts = dict(data.counts)
    assert counts.pop("unstable") == sum(g.unstable for g in data.groups)
    assert counts.pop("drifting") == sum(g.drifting for g in data.groups)
    assert counts == {"tests": 8, "passed": 3, "failures": 3, "errors": 2, "mismatches": 2,
                      "regressions": 1, "unjudged": 0}
    assert root.get("skipped") == "0"


def test_report_json_follows_its_schema(lab_report):
    data, paths = lab_report
    assert [p.name for p in paths] == list(REPORT_FILES)
    doc = json.loads(paths[0].read_text(), parse_constant=lambda c: pytest.fail(c))
    assert doc["schema"] == "edgepack-report/1"
    assert set(doc) >= {"generated_at", "edgepack_version", "session", "label", "params",
                        "bundles", "devices", "summary", "results", "runs", "regression",
                        "history"}
    assert doc["summary"]["failures"] == 3 and doc["label"] == "pr"
    devices = {d["serial"]: d for d in doc["devices"]}
    assert devices["C"]["status"] == "error" and "SIGSEGV" in devices["C"]["error"]
    assert devices["A"]["model"] == "Pixel 7" and devices["A"]["abi"] == "arm64-v8a"
    results = {(r["serial"], r["config_key"]): r for r in doc["results"]}
    a = results[("A", "cpu/t1")]
    assert a["outcome"] == "pass" and a["latency_ms"]["count"] == 60
    assert set(a["latency_ms"]) == {"count", "mean_ms", "median_ms", "std_ms", "min_ms",
                                    "max_ms", "p90_ms", "p95_ms", "p99_ms", "cv", "q1_ms",
                                    "q3_ms", "spread", "outliers"}
    assert {"unstable", "spread", "outliers", "drift", "drifting"} <= set(a)
    assert a["drift"]["repeats"] == 2 and a["spread"] < 0.10 and not a["unstable"]
    assert a["outputs"][0]["metrics"]["snr_db"] == "inf"
    assert a["peak_rss_mb"] == 50.0 and a["session_create_ms"] == 12.5
    assert results[("B", "cpu/t1")]["outcome"] == "fail"
    assert results[("D", "cpu/t2")]["regressed"] is True
    assert results[("D", "cpu/t2")]["regression"]["latency"]["regression"] is True
    assert results[("D", "cpu/t2")]["regression"]["latency"]["verdict"] == "regression"
    assert doc["regression"]["unjudged"] == 0
    assert results[("C", "cpu/t2")]["latency_ms"] is None
    assert len(doc["runs"]) == 16 and len(doc["runs"][0]["latencies_ms"]) == 30
    assert doc["regression"]["regressions"] == 1
    assert doc["history"] and doc["history"][0]["points"]


def test_report_md_has_the_tables_and_the_problems(lab_report):
    _, paths = lab_report
    text = paths[2].read_text()
    assert "| device | model | bundle | config | outcome |" in text
    assert "**C** picture `cpu/t1`: A3: runner failed" in text
    assert "## Regressions against sessions labelled 'main'" in text
    assert "❌ REGRESSION" in text


def test_report_html_is_self_contained(lab_report):
    _, paths = lab_report
    html = paths[3].read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<svg" in html and "Latency distribution per device" in html
    assert "History" in html  # D ran twice: a trend
    external = [u for u in ("http://", "https://", "//cdn") if u in html.replace(
        "http://www.w3.org/2000/svg", "")]
    assert external == []
    assert "\x1b" not in paths[1].read_text()  # the colour codes were kept out of the XML
    # Every paragraph closed once: a stray </p> once left half a sentence outside its note.
    from html.parser import HTMLParser

    class Paragraphs(HTMLParser):
        open = 0
        unmatched = 0

        def handle_starttag(self, tag, attrs):
            self.open += tag == "p"

        def handle_endtag(self, tag):
            if tag == "p":
                if self.open:
                    self.open -= 1
                else:
                    self.unmatched += 1

    parser = Paragraphs()
    parser.feed(html)
    assert parser.unmatched == 0


def test_images_show_host_device_and_difference():
    assert as_image(np.zeros((1, 10), np.float32)) is None  # logits
    assert as_image(np.zeros((1, 1, 672, 672), np.float32)).shape == (672, 672)
    assert as_image(np.zeros((1, 32, 32, 3), np.float32)).shape == (32, 32, 3)
    assert as_image(np.zeros((1, 1, 672, 672), np.int64)) is None
    expected = np.linspace(0, 1, 672 * 672, dtype=np.float64).reshape(672, 672)
    actual = expected.copy()
    actual[100, 200] += 0.5  # one wrong pixel
    e_png, a_png, d_png, max_diff, (lo, hi) = compare_images(expected, actual)
    assert max_diff == pytest.approx(0.5) and (lo, hi) == (0.0, pytest.approx(1.0))
    from io import BytesIO

    from PIL import Image

    diff = np.asarray(Image.open(BytesIO(d_png)))
    assert diff.shape[:2] == (336, 336)  # shrunk to fit, by max: the pixel survives
    assert diff.reshape(-1, 3).max(axis=0).tolist() == [255, 255, 255]
    assert Image.open(BytesIO(e_png)).size == (336, 336)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Skipped on a developer's machine without it; in CI (CI=true) a missing chromium fails.
@pytest.mark.skipif(chromium() is None and not os.environ.get("CI"),
                    reason="needs Debian's chromium (apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(bundle, tmp_path):
    from PIL import Image

    assert chromium() is not None, "CI needs Debian's chromium: apt-get install chromium"

    with HistoryStore.open(tmp_path / "h.db") as store:
        for label in ("main", "pr"):  # two sessions: the history plot has a line
            result = run_bench([bundle], [host_target("python")],
                               BenchParams(repeat=2, iterations=40, threads=(1, 2)),
                               [HistoryListener(store)], work_dir=tmp_path / label, label=label)
            data = build_report(result, store=store, bundles=[bundle])
        write_reports(data, tmp_path / "report")
    assert data.images and data.trend and len(data.trend[0].points) == 2
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         "--window-size=1280,2200", f"--screenshot={shot}",
         (tmp_path / "report" / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert pixels.std() > 20  # not a blank page
    # The plots drew: the first series' colour (#4c78a8, the median lines) is on screen, and
    # where it is, the picture varies (axes, dots, labels), as a rendered plot does.
    blue = np.all(np.abs(pixels - [76, 120, 168]) <= 6, axis=2)
    ys, xs = np.nonzero(blue)
    assert ys.size > 50
    area = pixels[max(ys.min() - 40, 0):ys.max() + 40, max(xs.min() - 40, 0):xs.max() + 40]
    assert area.std() > 15
    # The distribution plot's second series and the trend plot's lines are orange.
    orange = np.all(np.abs(pixels - [245, 133, 24]) <= 6, axis=2)
    assert orange.sum() > 50
