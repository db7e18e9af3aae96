"""A slice of the onnx package's node suite, one case per element type (bfloat16, the float8s,
int4, uint4, int2, uint2, float8e8m0, string, and the numpy types) plus test_constant, which has
no inputs, through `edgepack pack --inputs-from` and `edgepack run --engine native`, as
bench/node_suite.py runs the whole suite."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import pytest

from tests.conftest import REPO, run_cli

# case -> the dtypes the native runner must report for its inputs and outputs
SLICE = {
    "test_constant": ([], ["float32"]),
    "test_cast_FLOAT_to_BFLOAT16": (["float32"], ["bfloat16"]),
    "test_cast_BFLOAT16_to_FLOAT": (["bfloat16"], ["float32"]),
    "test_cast_FLOAT_to_FLOAT8E4M3FN": (["float32"], ["float8_e4m3fn"]),
    "test_cast_FLOAT_to_FLOAT8E4M3FNUZ": (["float32"], ["float8_e4m3fnuz"]),
    "test_cast_FLOAT8E5M2_to_FLOAT16": (["float8_e5m2"], ["float16"]),
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT": (["float8_e5m2fnuz"], ["float32"]),
    "test_cast_FLOAT_to_INT4": (["float32"], ["int4"]),
    "test_cast_UINT4_to_FLOAT": (["uint4"], ["float32"]),
    "test_cast_FLOAT_to_UINT4": (["float32"], ["uint4"]),
    "test_cast_INT2_to_FLOAT": (["int2"], ["float32"]),
    "test_cast_FLOAT_to_UINT2": (["float32"], ["uint2"]),
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0": (["float32"], ["float8_e8m0fnu"]),
    "test_strnormalizer_nostopwords_nochangecase": (["string"], ["string"]),
    "test_cast_FLOAT_to_DOUBLE": (["float32"], ["float64"]),
    "test_add_int8": (["int8", "int8"], ["int8"]),
    "test_add_uint8": (["uint8", "uint8"], ["uint8"]),
    "test_add_int16": (["int16", "int16"], ["int16"]),
    "test_add_uint16": (["uint16", "uint16"], ["uint16"]),
    "test_add_uint32": (["uint32", "uint32"], ["uint32"]),
    "test_add_uint64": (["uint64", "uint64"], ["uint64"]),
    "test_and2d": (["bool", "bool"], ["bool"]),
    "test_argmax_default_axis_example": (["float32"], ["int64"]),
}


def _node_suite():
    spec = importlib.util.spec_from_file_location("node_suite", REPO / "bench" / "node_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["node_suite"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    suite = _node_suite()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = {c.name: c for c in suite.collect(None) if c.name in SLICE}
    assert sorted(found) == sorted(SLICE)
    root = tmp_path_factory.mktemp("node")
    return {name: suite.write_case(case, root) for name, case in found.items()}


@pytest.mark.parametrize("name", list(SLICE))
def test_node_case_packs_and_passes_on_the_native_runner(host_runner, cases, tmp_path, name):
    directory = cases[name]
    bundle = tmp_path / "bundle"
    r = run_cli("pack", directory / "model.onnx", "-o", bundle, "--inputs-from", directory,
                "--allow-nonfinite")
    assert r.code == 0, r.stderr
    r = run_cli("run", bundle, "--engine", "native", "--iterations", "1", "--json")
    assert r.code == 0, r.stderr
    inputs, outputs = SLICE[name]
    for s in r.json()["sets"]:
        runner = s["runner"]
        assert runner["engine"] == "native"
        assert [t["dtype"] for t in runner["inputs"]] == inputs
        assert [t["dtype"] for t in runner["outputs"]] == outputs
        assert s["verdicts"] and all(v["passed"] for v in s["verdicts"]), s["verdicts"]
