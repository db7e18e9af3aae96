"""diagnose --report: the error along the graph as an HTML page with an SVG plot (issue 15)."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli


def _chain(path):
    w = numpy_helper.from_array(np.random.RandomState(4).randn(32, 32).astype(np.float32) / 6,
                                "W")
    names = ["x"] + [f"t{i}" for i in range(11)] + ["y"]
    nodes = []
    for i in range(12):
        op = "MatMul" if i % 2 == 0 else "Tanh"
        inputs = [names[i], "W"] if op == "MatMul" else [names[i]]
        nodes.append(helper.make_node(op, inputs, [names[i + 1]], name=f"n{i}_{op.lower()}"))
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_report_plots_the_error_along_the_graph(virtual_devices, host_runner, tmp_path):
    _chain(tmp_path / "chain.onnx")
    r = run_cli("pack", tmp_path / "chain.onnx", "-o", tmp_path / "b", "--random-sets", "1")
    assert r.code == 0, r.stderr
    dev = virtual_devices.start(separate_process=True,
                                args=["--runner-fault", "perturb:n4_matmul:0.05"])
    report = tmp_path / "diagnose.html"
    r = run_cli("diagnose", tmp_path / "b", "--device", dev.serial, "--report", report, "--json")
    assert r.code == 1, r.stderr
    doc = r.json()
    assert doc["first_divergent"]["node"] == "n4_matmul"
    rows = doc["table"]
    assert [row["index"] for row in rows] == sorted(row["index"] for row in rows)
    # The plotted error is relative to the tensor's magnitude: about the 5 % injected at the
    # faulty node, exact before it, within each tensor's tolerance exactly where within.
    by_node = {row["node"]: row for row in rows}
    assert abs(by_node["n4_matmul"]["scaled_error"] - 0.05) < 0.01
    assert by_node["n0_matmul"]["scaled_error"] == 0
    for row in rows:  # an element is within up to atol + rtol * |reference|
        if row["within"]:
            assert row["scaled_error"] <= 2 * row["scaled_tolerance"], row
        else:
            assert row["scaled_error"] > row["scaled_tolerance"], row

    html = report.read_text("utf-8")
    assert "<script" not in html.lower() and html.count("<svg") == 1
    svg = html[html.index("<svg"):html.index("</svg>")]
    # One dot per node of the table, in its order, red from the faulty node on.
    dots = re.findall(r"<circle [^>]*fill='(#[0-9a-f]{6})'><title>#(\d+) ([^ ]+) ", svg)
    assert [int(i) for _, i, _ in dots] == [row["index"] for row in rows]
    assert [color == "#cf222e" for color, _, _ in dots] == [not row["within"] for row in rows]
    assert "first divergent: n4_matmul (MatMul)" in svg and "log scale" in svg
    assert "n4_matmul" in html[html.index("</svg>"):]  # and the table under the plot

    # Bad input: a report path in a directory that does not exist, one line, exit 2.
    r = run_cli("diagnose", tmp_path / "b", "--device", dev.serial, "--report",
                tmp_path / "no" / "d.html")
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
