"""Every numeric option of every command is range-checked while the command line is parsed:
exit 2, one line naming the option, no traceback, before any file is read or device touched."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.host.test_bad_input import assert_clean_error

# Paths that do not exist: an option that is not checked at parse time shows up as a "no such
# file" error instead of its own, and the case fails.
MODEL, OUT, BUNDLE, PY = "{t}/none.onnx", "{t}/out", "{t}/no-bundle", "{t}/none.py:make"
DB = ["--db", "{t}/history.db"]
PACK = ["pack", MODEL, "-o", OUT]
EXPORT = ["export", PY, "-o", "{t}/m.onnx", "--input", "x:1x4"]
BENCH = ["bench", BUNDLE, "--device", "host", *DB]
REGRESS = ["regress", BUNDLE, "--baseline", "previous", "--device", "host", *DB]

CASES = [
    # pack
    (PACK, ["--random-sets", "-2"], "--random-sets"),
    (PACK, ["--seed", "-1"], "--seed"),
    (PACK, ["--seed", str(2**64)], "--seed"),
    (PACK, ["--dim", "batch=1000000000000"], "--dim"),
    (PACK, ["--scale", "0"], "--scale"),
    (PACK, ["--scale", "nan"], "--scale"),
    (PACK, ["--scale", "inf"], "--scale"),
    (PACK, ["--mean", "nan"], "--mean"),
    (PACK, ["--mean", "0,inf,0"], "--mean"),
    (PACK, ["--std", "nan"], "--std"),
    (PACK, ["--rtol", "-1"], "--rtol"),
    (PACK, ["--rtol", "nan"], "--rtol"),
    (PACK, ["--atol", "inf"], "--atol"),
    (PACK, ["--tolerance", "out=-1,0"], "--tolerance"),
    (PACK, ["--tolerance", "out=1e-3,nan"], "--tolerance"),
    (PACK, ["--resize", "100000x100000"], "--resize"),
    # export: all before torch is imported
    (EXPORT, ["--opset", "0"], "--opset"),
    (EXPORT, ["--opset", "1000"], "--opset"),
    (EXPORT, ["--seed", "-1"], "--seed"),
    (EXPORT, ["--rtol", "nan"], "--rtol"),
    (EXPORT, ["--atol", "-1"], "--atol"),
    (EXPORT, ["--input", "y:100000x100000x100000"], "--input y"),
    # run and deploy share the runner's ranges
    *[(cmd, opt, opt[0]) for cmd in (["run", BUNDLE], ["deploy", BUNDLE]) for opt in (
        ["--iterations", "-1"], ["--iterations", "20000000"], ["--warmup", "-1"],
        ["--threads", "5000"], ["--min-seconds", "0"], ["--min-seconds", "-1"],
        ["--min-seconds", "nan"], ["--min-seconds", "inf"], ["--min-seconds", "2e6"],
    )],
    (["deploy", BUNDLE], ["--timeout", "nan"], "--timeout"),
    (["deploy", BUNDLE], ["--timeout", "inf"], "--timeout"),
    (["deploy", BUNDLE], ["--timeout", "0.5"], "--timeout"),
    # bench and regress
    *[(cmd, opt, opt[0]) for cmd in (BENCH, REGRESS) for opt in (
        ["--repeat", "0"], ["--iterations", "20000000"], ["--warmup", "-1"],
        ["--cooldown", "nan"], ["--cooldown", "inf"], ["--cooldown", "-1"],
        ["--threads", "1,5000"], ["--threads", "1,-2"], ["--timeout", "nan"],
        ["--timeout", "0"],
    )],
    (BENCH, ["--top", "0"], "--top"),
    (REGRESS, ["--threshold", "nan"], "--threshold"),
    (REGRESS, ["--threshold", "-1"], "--threshold"),
    (REGRESS, ["--alpha", "0"], "--alpha"),
    (REGRESS, ["--alpha", "1"], "--alpha"),
    (REGRESS, ["--alpha", "nan"], "--alpha"),
    # history, devices
    (["history", *DB], ["--limit", "0"], "--limit"),
    (["history", *DB], ["--limit", "-1"], "--limit"),
    (["history", *DB], ["--since", "99999999999d"], "--since"),
    (["devices"], ["--adb-server", "127.0.0.1:99999"], "127.0.0.1:99999"),
]


@pytest.mark.parametrize("command, option, needle", CASES,
                         ids=[f"{c[0]} {' '.join(o)}" for c, o, _ in CASES])
def test_out_of_range_options_are_refused_at_parse_time(tmp_path, command, option, needle):
    args = [a.replace("{t}", str(tmp_path)) for a in [*command, *option]]
    assert_clean_error(run_cli(*args), needle)
    # Refused before anything was made: no history database, no output.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["pack"], "Missing argument"),
    (["pack", "m.onnx", "-o", "b", "--bogus"], "No such option: --bogus"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["runner", "build"], "Missing option '--target'"),
    (["run", "b", "--iterations", "many"], "--iterations"),
])
def test_usage_errors_are_one_line(args, needle):
    # click's own usage block is four lines; every other bad input is one.
    assert_clean_error(run_cli(*args), needle)
    assert "--help" in run_cli(*args).stderr


def test_help_is_still_help():
    r = run_cli("runner")  # a group without its command shows its help, as before
    assert "build" in r.stderr and "edgepack: error" not in r.stderr
    assert run_cli("pack", "--help").code == 0


def _model(path, *dims: str | int) -> None:
    """A one-node ONNX model whose input has these (symbolic or fixed) dims."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_huge_dim_is_bad_input_not_a_memory_error(tmp_path):
    model = tmp_path / "m.onnx"
    _model(model, "batch", 4)
    # It was exit 4, "internal error: MemoryError", from numpy.
    assert_clean_error(run_cli("pack", model, "-o", tmp_path / "b", "--dim", "batch=1000000000000"),
                       "--dim 'batch=1000000000000'", "at most 2,147,418,112")
    assert not (tmp_path / "b").exists()
    assert run_cli("pack", model, "-o", tmp_path / "b", "--dim", "batch=3").code == 0


def test_dims_whose_product_is_too_big_are_bad_input(tmp_path):
    model = tmp_path / "m.onnx"
    _model(model, "a", "b")
    # Each dim alone passes --dim's own range; the input they make would be 4 TB.
    r = run_cli("pack", model, "-o", tmp_path / "b", "--dim", "a=1000000", "--dim", "b=1000000")
    assert_clean_error(r, "random input 'x'", "[1000000, 1000000]", "2 GiB")
    assert not (tmp_path / "b").exists()
