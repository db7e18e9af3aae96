"""lab.toml: reading it, errors that name the key and the line, choosing devices."""

from __future__ import annotations

import textwrap

import pytest

from edgepack.devices.adb import ServerAddress
from edgepack.errors import EdgepackError, ExitCode
from edgepack.lab import AdbServer, Lab, load_lab, select_devices
from tests.lab.conftest import device_info

GOOD = """\
# the lab's phones
[defaults]
iterations = 40
repeat = 2
threads = [1, 4]
ep = "cpu"
cooldown = 1.5
threshold_percent = 7.5
alpha = 0.02

[[servers]]
name = "rack1"
address = "10.0.0.5:5037"

[[servers]]
address = "127.0.0.1:5038"

[[devices]]
serial = "R58M41"
cpu_affinity = "f0"

[[devices]]
model = "Pixel 7*"
abi = "arm64-v8a"
min_sdk = 30
server = "rack1"
max = 2
"""


def write(tmp_path, text: str):
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_reads_whole(tmp_path):
    lab = load_lab(write(tmp_path, GOOD))
    d = lab.defaults
    assert (d.iterations, d.repeat, d.threads, d.ep, d.cooldown) == (40, 2, [1, 4], ["cpu"], 1.5)
    assert (d.threshold_percent, d.alpha, d.warmup) == (7.5, 0.02, None)
    assert [s.name for s in lab.servers] == ["rack1", "127.0.0.1:5038"]
    assert lab.servers[0].address == ServerAddress("10.0.0.5", 5037)
    first, second = lab.devices
    assert (first.serial, first.cpu_affinity, first.line) == ("R58M41", "f0", 18)
    assert (second.model, second.abi, second.min_sdk, second.server, second.max) == (
        "Pixel 7*", "arm64-v8a", 30, "rack1", 2)
    assert second.line == 22


@pytest.mark.parametrize("text, where", [
    # tomllib's own syntax errors: the line comes from its message
    ("[defaults]\niterations = \n", "lab.toml:2: not valid TOML"),
    ("[defaults]\nrepeat = 2\n[defaults]\n", "lab.toml:3: not valid TOML"),
    # well-formed TOML with a wrong value: the line is found again by key
    ("[defaults]\niteratons = 5\n", "lab.toml:2: defaults.iteratons: unknown key "
                                    "(did you mean 'iterations'?)"),
    ("# x\n[defaults]\nrepeat = 2\niterations = 0\n",
     "lab.toml:4: defaults.iterations: expected an integer >= 1, not 0"),
    ("[defaults]\nthreads = [1, \"two\"]\n", "lab.toml:2: defaults.threads:"),
    ("[defaults]\nep = [\"cpu\", \"gpu\"]\n", "lab.toml:2: defaults.ep: expected one or a list"),
    ("[defaults]\ncooldown = true\n", "lab.toml:2: defaults.cooldown: expected a number"),
    # TOML spells nan and inf; neither is a duration or a percentage
    ("[defaults]\ncooldown = nan\n", "lab.toml:2: defaults.cooldown: expected a number >= 0, "
                                      "not nan"),
    ("[defaults]\ntimeout = inf\n", "lab.toml:2: defaults.timeout: expected a number >= 1, "
                                     "not inf"),
    ("[defaults]\nthreshold_percent = -nan\n", "lab.toml:2: defaults.threshold_percent: "
                                                "expected a number >= 0"),
    # the runner's own limits
    ("[defaults]\niterations = 20000000\n", "lab.toml:2: defaults.iterations: expected an "
                                             "integer <= 10000000, not 20000000"),
    ("[defaults]\ntimeout = 2e6\n", "lab.toml:2: defaults.timeout: expected a number <= 1000000"),
    ("[defaults]\nthreads = [1, 5000]\n", "lab.toml:2: defaults.threads: expected an integer "
                                           "from 0 to 4096"),
    ("[defaults]\nalpha = 1.5\n", "lab.toml:2: defaults.alpha: expected a probability"),
    ("[defaults]\n\ncpu_affinity = \"zz\"\n", "lab.toml:3: defaults.cpu_affinity: cpu affinity"),
    ("[device]\nserial = \"x\"\n", "lab.toml:1: device: unknown key (did you mean 'devices'?)"),
    ("defaults = 3\n", "lab.toml:1: defaults: expected a table"),
    ("[[servers]]\nname = \"a\"\n", "lab.toml:1: servers[0]: every server needs address"),
    ("[[servers]]\naddress = \"a:b\"\n", "lab.toml:2: servers[0].address: adb server 'a:b'"),
    ("[[servers]]\naddress = \"a:1\"\nname = \"x\"\n[[servers]]\naddress = \"b:2\"\n"
     "name = \"x\"\n", "lab.toml:6: servers[1].name: server 'x' is listed twice"),
    ("[[devices]]\nserial = \"a\"\n\n[[devices]]\ncpu_affinity = \"f0\"\n",
     "lab.toml:4: devices[1]: a device needs a serial or a selector"),
    ("[[devices]]\nserial = \"a\"\n[[devices]]\nmodel = \"P\"\nmin_sdk = \"30\"\n",
     "lab.toml:5: devices[1].min_sdk: expected an integer >= 1, not '30'"),
    ("[[devices]]\nserial = \"a\"\nmodel = \"P\"\n",
     "lab.toml:3: devices[0].model: give a serial or a selector, not both"),
    ("[[devices]]\nmodel = \"P\"\nserver = \"rack9\"\n",
     "lab.toml:3: devices[0].server: no server named 'rack9'"),
    ("[[devices]]\nmodel = \"P\"\nsreial = \"x\"\n",
     "lab.toml:3: devices[0].sreial: unknown key (did you mean 'serial'?)"),
])
def test_errors_name_the_key_and_the_line(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(EdgepackError) as err:
        load_lab(path)
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.message.startswith(str(path.parent) + "/" + where), err.value.message


def test_a_missing_file_is_bad_input(tmp_path):
    with pytest.raises(EdgepackError, match="no such lab file"):
        load_lab(tmp_path / "nope.toml")


def _server(name: str) -> AdbServer:
    return AdbServer(name, ServerAddress("127.0.0.1", 5037))


def test_selectors_choose_devices_and_missing_ones_are_reported(tmp_path):
    lab = load_lab(write(tmp_path, GOOD))
    rack1, local = _server("rack1"), _server("127.0.0.1:5038")
    inventory = [
        (rack1, device_info("P7-a", "Pixel 7", sdk=34)),
        (rack1, device_info("P7-b", "pixel 7 pro", sdk=33)),  # glob and case-insensitive
        (rack1, device_info("P7-c", "Pixel 7", sdk=34)),  # over max = 2
        (rack1, device_info("P6", "Pixel 6", sdk=34)),
        (local, device_info("P7-local", "Pixel 7", sdk=34)),  # not on rack1
        (rack1, device_info("old", "Pixel 7", sdk=29)),  # below min_sdk
    ]
    chosen, missing = select_devices(lab, inventory)
    assert [c.info.serial for c in chosen] == ["P7-a", "P7-b"]
    # The serial entry finds no device: reported, not dropped.
    assert [m.name for m in missing] == ["R58M41"]
    assert "no attached device matches serial R58M41" in missing[0].reason
    assert "lab.toml:18" in missing[0].reason

    inventory.append((local, device_info("R58M41", "Galaxy S23")))
    chosen, missing = select_devices(lab, inventory)
    assert [c.info.serial for c in chosen] == ["R58M41", "P7-a", "P7-b"]
    assert chosen[0].selector is not None and chosen[0].selector.cpu_affinity == "f0"
    assert missing == []


def test_no_devices_listed_means_every_ready_device(tmp_path):
    lab = Lab(tmp_path / "lab.toml")
    offline = device_info("x")
    offline = type(offline)(**{**offline.__dict__, "state": "offline"})
    chosen, missing = select_devices(lab, [(_server("s"), device_info("a")),
                                           (_server("s"), offline)])
    assert [c.info.serial for c in chosen] == ["a"] and missing == []
