"""edgepack.option_values: every option value parsed in one place, one line and exit 2 when bad."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgepack.errors import EdgepackError, ExitCode
from edgepack.option_values import (
    MAX_BYTES,
    OutputTolerance,
    parse_bytes,
    parse_cpu_affinity,
    parse_dim,
    parse_eps,
    parse_floats,
    parse_pairs,
    parse_resize,
    parse_temperatures,
    parse_threads,
    parse_tolerance,
)
from tests.conftest import run_cli
from tests.host.test_bad_input import assert_clean_error

HUGE = "9" * 5000  # more digits than int() reads from a string (4300)


def test_good_values():
    assert parse_tolerance("logits=1e-3,1e-5") == OutputTolerance("logits", 1e-3, 1e-5)
    assert parse_tolerance("a=b=0,0") == OutputTolerance("a=b", 0.0, 0.0)  # the last = splits
    assert parse_dim("batch=4") == ("batch", 4)
    assert parse_dim("batch=\u0661\u0662") == ("batch", 12)  # any script's digits, as int()
    assert parse_resize(" 224X160 ") == (224, 160)
    assert parse_floats("--mean", "0.5,0.25,-1") == (0.5, 0.25, -1.0)
    assert parse_threads(" 1, 2 ,4,") == (1, 2, 4)
    assert parse_eps("cpu, xnnpack") == ("cpu", "xnnpack")
    assert parse_cpu_affinity("0xF0") == "0xF0"
    assert [parse_bytes("--q", t) for t in ("123", "64K", "10M", "1.5G", "2 MiB", "3kb")] == [
        123, 65536, 10 * 2**20, 3 * 2**29, 2 * 2**20, 3072]
    assert parse_pairs("--prop", ["a=1", "b=", "a=x=y"]) == {"a": "x=y", "b": ""}
    assert parse_temperatures(["cpu0=45.5", "skin=-3"]) == {"cpu0": 45.5, "skin": -3.0}


@pytest.mark.parametrize("call, message", [
    (lambda: parse_tolerance("logits=1e-3"), "--tolerance 'logits=1e-3': expected NAME=RTOL"),
    (lambda: parse_tolerance("x=-1,0"), "--tolerance 'x=-1,0': RTOL and ATOL must be finite"),
    (lambda: parse_tolerance("x=1,nan"), "--tolerance 'x=1,nan': RTOL and ATOL must be finite"),
    (lambda: parse_dim("batch=0"), "--dim 'batch=0': expected LABEL=SIZE"),
    (lambda: parse_dim("batch=-1"), "--dim 'batch=-1': expected LABEL=SIZE"),
    (lambda: parse_dim("batch=\u00b2"), "--dim 'batch=\u00b2': expected LABEL=SIZE"),
    (lambda: parse_dim("batch=" + HUGE), "--dim 'batch=999"),
    (lambda: parse_resize("0x5"), "--resize '0x5': expected WIDTHxHEIGHT"),
    (lambda: parse_floats("--std", "1,x"), "--std '1,x': expected numbers separated by commas"),
    (lambda: parse_floats("--mean", "0,inf"), "--mean '0,inf': every value must be a finite"),
    (lambda: parse_threads("1,-1"), "--threads '1,-1': each value must be from 0"),
    (lambda: parse_eps("cpu,gpu"), "--ep 'cpu,gpu': unknown execution provider 'gpu'"),
    (lambda: parse_cpu_affinity("0"), "--cpu-affinity: cpu affinity '0' is not a CPU mask"),
    (lambda: parse_bytes("--quota", "10X"), "--quota '10X': expected a number of bytes"),
    (lambda: parse_bytes("--quota", HUGE), "--quota '999"),
    (lambda: parse_bytes("--quota", str(MAX_BYTES + 1)), "--quota '9223372036854775808': "
                                                         "expected at most"),
    (lambda: parse_pairs("--prop", ["=x"]), "--prop '=x': expected KEY=VALUE"),
    (lambda: parse_temperatures(["cpu0=hot"]), "--temperature cpu0=hot: expected NAME=CELSIUS"),
])
def test_bad_values_name_the_option(call, message):
    with pytest.raises(EdgepackError) as err:
        call()
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.message.startswith(message), err.value.message


def test_huge_numbers_are_exact_or_refused():
    # 1.5G was float arithmetic; a byte count of 400 digits was inf, and int(inf) raised.
    assert parse_bytes("--q", "0.5K") == 512
    assert parse_bytes("--q", "1." + "5" * 400 + "K") == 1592
    assert parse_bytes("--q", str(MAX_BYTES)) == MAX_BYTES
    # Far past every limit still reads as "too big", never as a ValueError from int().
    assert parse_resize(HUGE + "x2")[0] > 2**63


@pytest.mark.parametrize("args, needle", [
    # These escaped as "internal error" (exit 4): int("²") after "²".isdigit(), int() of more
    # than 4300 digits, int(float("1000...")) of inf.
    (["pack", "{t}/none.onnx", "-o", "{t}/out", "--dim", "batch=\u00b2"], "--dim"),
    (["pack", "{t}/none.onnx", "-o", "{t}/out", "--dim", f"batch={HUGE}"], "--dim"),
    (["pack", "{t}/none.onnx", "-o", "{t}/out", "--resize", f"{HUGE}x2"], "--resize"),
    (["virtual-device", "--root", "{t}/root", "--quota", "1" + "0" * 400], "--quota"),
    (["virtual-device", "--root", "{t}/root", "--bandwidth", HUGE], "--bandwidth"),
], ids=["dim-superscript", "dim-huge", "resize-huge", "quota-inf", "bandwidth-huge"])
def test_bad_values_are_bad_input_not_internal_errors(tmp_path, args, needle):
    r = run_cli(*[a.replace("{t}", str(tmp_path)) for a in args])
    assert_clean_error(r, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before anything was made


def test_parsing_options_imports_nothing_heavy():
    # cli modules, lab.py and virtual-device all import this; --help must stay fast.
    code = ("import sys, edgepack.option_values as v; v.parse_eps('cpu'); "
            "v.parse_cpu_affinity('f0'); "
            "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'typer', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
