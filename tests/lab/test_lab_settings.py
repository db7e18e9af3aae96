"""The one layering of bench's and regress's settings: command line > lab.toml > defaults."""

from __future__ import annotations

import textwrap

import pytest

from edgepack.errors import EdgepackError, ExitCode
from edgepack.lab import GivenOptions, LabSettings, layer_settings, select_devices
from edgepack.records import BenchParams
from edgepack.regress import DEFAULT_ALPHA, DEFAULT_THRESHOLD
from tests.conftest import run_cli
from tests.lab.conftest import device_info
from tests.lab.test_lab_config import _server

BUILT = BenchParams()


def lab_file(tmp_path, text: str):
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent(text))
    return path


def params(settings: LabSettings) -> dict[str, object]:
    return {
        "repeat": settings.params.repeat,
        "iterations": settings.params.iterations,
        "warmup": settings.params.warmup,
        "cooldown": settings.params.cooldown_s,
        "threads": settings.params.threads,
        "ep": settings.params.eps,
        "cpu_affinity": settings.params.cpu_affinity,
        "timeout": settings.params.timeout_s,
        "threshold_percent": settings.threshold * 100,
        "alpha": settings.alpha,
    }


# (GivenOptions field, the option's text, its value; lab.toml's line, its value; the default)
FIELDS = [
    ("repeat", 5, 5, "repeat = 2", 2, BUILT.repeat),
    ("iterations", 9, 9, "iterations = 40", 40, BUILT.iterations),
    ("warmup", 0, 0, "warmup = 3", 3, BUILT.warmup),
    ("cooldown", 0.5, 0.5, "cooldown = 1.5", 1.5, BUILT.cooldown_s),
    ("threads", "1,2,4", (1, 2, 4), "threads = [4]", (4,), BUILT.threads),
    ("ep", "xnnpack", ("xnnpack",), "ep = [\"cpu\", \"nnapi\"]", ("cpu", "nnapi"), BUILT.eps),
    ("cpu_affinity", "3", "3", "cpu_affinity = \"f0\"", "f0", None),
    ("timeout", 30.0, 30.0, "timeout = 120", 120.0, BUILT.timeout_s),
    ("threshold_percent", 12.5, 12.5, "threshold_percent = 7.5", 7.5,
     DEFAULT_THRESHOLD * 100),
    ("alpha", 0.2, 0.2, "alpha = 0.02", 0.02, DEFAULT_ALPHA),
]


@pytest.mark.parametrize("field, given, value, line, in_lab, default", FIELDS,
                         ids=[f[0] for f in FIELDS])
def test_each_setting_is_the_command_lines_else_the_lab_files_else_the_default(
        tmp_path, field, given, value, line, in_lab, default):
    (tmp_path / "empty").mkdir()
    others = lab_file(tmp_path / "empty", "[defaults]\n")  # a lab file that sets nothing
    lab = lab_file(tmp_path, f"[defaults]\n{line}\n")

    def effective(**options):
        return params(layer_settings(GivenOptions(**options)))[field]

    assert effective() == pytest.approx(default)
    assert effective(lab=others) == pytest.approx(default)
    assert effective(lab=lab) == pytest.approx(in_lab)
    assert effective(**{field: given}) == pytest.approx(value)
    assert effective(lab=lab, **{field: given}) == pytest.approx(value)
    # Every other setting keeps its default: one field's layers do not leak into another's.
    layered = params(layer_settings(GivenOptions(lab=lab, **{field: given})))
    untouched = params(layer_settings(GivenOptions()))
    assert {k: v for k, v in layered.items() if k != field} == \
        {k: v for k, v in untouched.items() if k != field}


def test_what_is_not_layered_is_passed_through(tmp_path):
    given = GivenOptions(device="host", engine="python", db=tmp_path / "h.db", label="pr",
                         report_dir=tmp_path / "rep", profile=True, top=3)
    s = layer_settings(given)
    assert (s.device, s.engine, s.db, s.label, s.report_dir) == (
        "host", "python", tmp_path / "h.db", "pr", tmp_path / "rep")
    assert (s.params.profile, s.params.top_ops, s.lab) == (True, 3, None)


PHONES = """\
[defaults]
cpu_affinity = "1"

[[devices]]
serial = "big-at-4"
cpu_affinity = "f0"

[[devices]]
model = "Pixel 7*"
cpu_affinity = "c0"

[[devices]]
model = "Galaxy*"
"""


def test_a_devices_own_mask_wins_over_the_defaults_and_the_command_line_over_both(tmp_path):
    lab = lab_file(tmp_path, PHONES)
    inventory = [(_server("s"), device_info("big-at-4", "Pixel 7")),
                 (_server("s"), device_info("p7", "Pixel 7 Pro")),
                 (_server("s"), device_info("s23", "Galaxy S23"))]
    s = layer_settings(GivenOptions(lab=lab))
    chosen, missing = select_devices(s.lab, inventory)
    assert missing == []
    # Chosen by the lab's own entries: each entry's mask, else [defaults]'.
    assert [(c.info.serial, s.device_affinity(c.info, c.selector)) for c in chosen] == [
        ("big-at-4", "f0"), ("p7", "c0"), ("s23", "1")]
    # Named with --device: the first matching entry that has a mask.
    assert [s.device_affinity(info) for _, info in inventory] == ["f0", "c0", "1"]
    assert s.device_affinity(device_info("other", "Pixel 6")) == "1"

    # --cpu-affinity is the command line: it wins over every entry of the file. It used to
    # lose to a device's own mask.
    pinned = layer_settings(GivenOptions(lab=lab, cpu_affinity="2"))
    assert [pinned.device_affinity(c.info, c.selector) for c in chosen] == ["2", "2", "2"]
    assert [pinned.device_affinity(info) for _, info in inventory] == ["2", "2", "2"]
    # No lab file: every device runs under the command line's mask, or none.
    assert layer_settings(GivenOptions(cpu_affinity="2")).device_affinity(chosen[0].info) == "2"
    assert layer_settings(GivenOptions()).device_affinity(chosen[0].info) is None


@pytest.mark.parametrize("options, where", [
    ({"threads": "1,x"}, "--threads '1,x': expected integers, e.g. 1,2,4"),
    ({"threads": "1,5000"}, "--threads '1,5000': each value must be from 0"),
    ({"threads": " , "}, "--threads needs at least one value"),
    ({"ep": "cpu,gpu"}, "--ep 'cpu,gpu': unknown execution provider 'gpu': choose one of cpu"),
    ({"ep": ","}, "--ep needs at least one value"),
    ({"cpu_affinity": "xyz"}, "--cpu-affinity: cpu affinity 'xyz' is not a CPU mask"),
])
def test_a_bad_option_is_named(options, where):
    with pytest.raises(EdgepackError) as err:
        layer_settings(GivenOptions(**options))
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.message.startswith(where), err.value.message


@pytest.mark.parametrize("text, where", [
    ("[defaults]\nrepeat = 2\nthreads = [1, \"x\"]\n", "lab.toml:3: defaults.threads:"),
    ("[defaults]\n\nep = \"gpu\"\n", "lab.toml:3: defaults.ep: expected one or a list"),
    ("[[devices]]\nmodel = \"P\"\ncpu_affinity = \"zz\"\n",
     "lab.toml:3: devices[0].cpu_affinity: cpu affinity 'zz' is not a CPU mask"),
])
def test_a_bad_lab_value_is_named_by_file_and_line(tmp_path, text, where):
    lab = lab_file(tmp_path, text)
    with pytest.raises(EdgepackError) as err:
        # The command line would set these: the file is read, and refused, all the same.
        layer_settings(GivenOptions(lab=lab, threads="1", ep="cpu", cpu_affinity="1"))
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.message.startswith(f"{tmp_path}/{where}"), err.value.message


@pytest.mark.usefixtures("host_runner")
def test_the_command_lines_mask_reaches_a_device_the_lab_pins(virtual_devices, adb_env,
                                                              lab_bundle, tmp_path):
    """Through `edgepack bench` to a virtual device behind the real adb server: the lab pins
    the device to CPU 1, the command line to CPU 0, and the run goes where the command line
    says (the mask is part of its configuration key)."""
    device = virtual_devices.start(model="Pixel 7")
    lab = lab_file(tmp_path, f"""\
        [[servers]]
        address = "{adb_env.host}:{adb_env.port}"

        [[devices]]
        model = "Pixel 7"
        cpu_affinity = "2"
        """)
    r = run_cli("bench", lab_bundle, "--lab", lab, "--cpu-affinity", "1", "--repeat", "1",
                "--iterations", "2", "--db", tmp_path / "h.db", "--json")
    assert r.code == 0, r.stderr
    (group,) = r.json()["results"]
    assert (group["serial"], group["config_key"]) == (device.serial, "cpu/t1/cpu=1")
