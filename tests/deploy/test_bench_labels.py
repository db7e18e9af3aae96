"""bench --labels (issue 15): each device's top-5 by name beside the host's, in report.html and
report.json (and bench --json), as deploy and run show them."""

from __future__ import annotations

import json

from tests.conftest import EXAMPLES, run_cli

CIFAR = EXAMPLES / "labels" / "cifar10.txt"


def test_bench_reports_show_top_classes_per_device(bundles, host_runner, virtual_devices,
                                                   tmp_path):
    a, b = virtual_devices.start(), virtual_devices.start()
    reports = tmp_path / "reports"
    r = run_cli("bench", bundles["resnet20"], "--device", f"{a.serial},{b.serial}", "--repeat",
                "1", "--warmup", "0", "--iterations", "2", "--labels", CIFAR, "--db",
                tmp_path / "h.db", "--report-dir", reports, "--json")
    assert r.code == 0, r.stderr
    names = CIFAR.read_text().split()
    for doc in (r.json(), json.loads((reports / "report.json").read_text())):
        results = doc["results"]
        assert sorted(g["serial"] for g in results) == sorted([a.serial, b.serial])
        for g in results:
            tops = g["top_classes"]
            assert len(tops) == 2  # the bundle's two input sets, one row each
            for t in tops:
                assert len(t["host"]) == 5 and len(t["device"]) == 5
                assert [x["index"] for x in t["host"]] == [x["index"] for x in t["device"]]
                assert all(x["label"] == names[x["index"]] for x in t["host"])
    html = (reports / "report.html").read_text()
    section = html[html.index("Top classes (--labels)"):]
    for serial in (a.serial, b.serial):
        assert f"device {serial}" in section
    top1 = r.json()["results"][0]["top_classes"][0]["host"][0]["label"]
    assert f"<td>{top1}</td>" in section and "top-1 <span class='pass'" in section


def test_bench_labels_are_checked_before_any_run(bundles, virtual_device, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("cat\ndog\n")
    for bundle, labels, said in ((bundles["resnet20"], short, "2 name(s) for the 10 classes"),
                                 (bundles["super_resolution"], CIFAR, "is class scores")):
        r = run_cli("bench", bundle, "--device", virtual_device.serial, "--labels", labels,
                    "--db", tmp_path / "h.db")
        assert r.code == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and said in r.stderr, r.stderr
    assert not (virtual_device.root / "data/local/tmp/edgepack").exists()
