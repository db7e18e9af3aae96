"""Bench reports' comparison tables show each output's shape (issue 15 part 2)."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_bench_reports_show_each_outputs_shape(lab_bundle, tmp_path):
    reports = tmp_path / "reports"
    r = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat", "1",
                "--iterations", "2", "--db", tmp_path / "h.db", "--report-dir", reports)
    assert r.code == 0, r.stderr
    manifest = json.loads((lab_bundle / "manifest.json").read_text())
    shape = "x".join(map(str, manifest["test_sets"][0]["outputs"][0]["shape"]))
    md = (reports / "report.md").read_text()
    header = next(line for line in md.splitlines() if "| output | shape | verdict |" in line)
    row = md.splitlines()[md.splitlines().index(header) + 2]
    assert f"| {shape} | pass |" in row, row
    html = (reports / "report.html").read_text()
    assert "<th>output</th><th>shape</th><th>verdict</th>" in html
    assert f"<td>{shape}</td>" in html
