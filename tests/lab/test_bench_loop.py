"""The bench loop: devices in parallel, failures kept to their device, state, sweeps, profiles."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edgepack.bench import Target, host_target, run_bench
from edgepack.bundle import load_bundle
from edgepack.devices.state import DeviceState, parse_state, state_warnings
from edgepack.errors import EdgepackError, ExitCode
from edgepack.profile import merge_op_times, parse_profile
from edgepack.records import BenchListener, BenchParams, config_key
from edgepack.runner.result import RunConfig, parse_cpu_mask
from tests.lab.conftest import FakePhone, deploy_result, samples

FAST = BenchParams(repeat=2, iterations=20, probe_state=True)


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


class Recorder(BenchListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.threads: set[int] = set()

    def _note(self, kind: str, value: object) -> None:
        self.threads.add(threading.get_ident())
        self.events.append((kind, value))

    def on_start(self, plan):  # noqa: ANN001, ANN201
        self._note("start", plan.session)

    def on_run_start(self, serial, bundle, config, repeat):  # noqa: ANN001, ANN201
        self._note("run_start", (serial, repeat))

    def on_run_end(self, run):  # noqa: ANN001, ANN201
        self._note("run", (run.serial, run.status))

    def on_device_end(self, serial, error):  # noqa: ANN001, ANN201
        self._note("device_end", (serial, error))

    def on_end(self, result):  # noqa: ANN001, ANN201
        self._note("end", result.session)


def crash(config: RunConfig):
    raise EdgepackError("runner failed (run_failure): SIGSEGV in MlasConv", ExitCode.DEVICE)


def test_a_failing_device_never_stops_the_others(bundle, tmp_path):
    phones = [FakePhone("A"), FakePhone("B", run=crash), FakePhone("C", model="Galaxy S23")]
    recorder = Recorder()
    result = run_bench([bundle], [p.target() for p in phones], FAST, [recorder],
                       work_dir=tmp_path)
    by_device = {s: [r for r in result.runs if r.serial == s] for s in "ABC"}
    assert [r.status for r in by_device["A"]] == ["pass", "pass"]
    assert [r.status for r in by_device["C"]] == ["pass", "pass"]
    # B answers its shell, so each of its runs is tried and each failure recorded.
    assert [r.status for r in by_device["B"]] == ["error", "error"]
    assert "SIGSEGV" in (by_device["B"][0].error or "")
    assert result.exit_code == ExitCode.DEVICE
    assert set(result.failed_devices) == {"B"}
    groups = {g.serial: g for g in result.groups()}
    assert groups["A"].status == "pass" and groups["A"].stats.count == 40
    assert groups["B"].status == "error" and groups["B"].stats is None
    assert groups["C"].model == "Galaxy S23"
    # Listeners ran on this thread only, in order, once per run.
    assert recorder.threads == {threading.get_ident()}
    assert recorder.events[0][0] == "start" and recorder.events[-1][0] == "end"
    assert sum(1 for kind, _ in recorder.events if kind == "run") == 6
    assert [r.serial for r in result.runs] == ["A", "A", "B", "B", "C", "C"]


def test_a_vanished_device_skips_its_remaining_runs(bundle, tmp_path):
    gone = FakePhone("gone")

    def vanish(config: RunConfig):
        gone.alive = False
        raise EdgepackError("gone: lost the device while trying to push init.bin",
                            ExitCode.DEVICE)

    gone._run = vanish
    params = BenchParams(repeat=3, iterations=10, threads=(1, 2), probe_state=False)
    result = run_bench([bundle], [FakePhone("ok").target(), gone.target()], params,
                       work_dir=tmp_path)
    lost = [r for r in result.runs if r.serial == "gone"]
    assert gone.calls == 1  # not tried again once its shell stopped answering
    assert len(lost) == 6 and all(r.status == "error" for r in lost)
    assert lost[0].error.startswith("gone: lost the device")
    assert all(r.error.startswith("not run: device lost after") for r in lost[1:])
    assert all(r.status == "pass" for r in result.runs if r.serial == "ok")


def test_a_hung_device_is_given_up_at_the_deadline(bundle, tmp_path):
    release = threading.Event()

    def hang(config: RunConfig):
        release.wait(30)
        raise EdgepackError("released", ExitCode.DEVICE)

    params = BenchParams(repeat=2, iterations=10, probe_state=False, run_deadline_s=0.5)
    t0 = time.perf_counter()
    try:
        result = run_bench([bundle], [FakePhone("fine").target(), FakePhone("hung", hang).target()],
                           params, work_dir=tmp_path)
    finally:
        release.set()
    assert time.perf_counter() - t0 < 5
    hung = [r for r in result.runs if r.serial == "hung"]
    assert len(hung) == 2 and all("no answer within 0.5 s" in r.error for r in hung)
    assert [r.status for r in result.runs if r.serial == "fine"] == ["pass", "pass"]


def test_an_unreachable_device_is_reported_for_every_run(bundle, tmp_path):
    def unreachable():
        raise EdgepackError("device X is not attached (adb server(s): local)", ExitCode.DEVICE)

    target = Target("X", lambda *a: None, describe=unreachable)
    result = run_bench([bundle], [target, FakePhone("Y").target()], FAST, work_dir=tmp_path)
    xs = [r for r in result.runs if r.serial == "X"]
    assert len(xs) == 2
    assert all(r.error == "not run: unavailable: device X is not attached (adb server(s): local)"
               for r in xs)


def test_devices_run_in_parallel(bundle, tmp_path):
    def slow(serial):
        def run(config):
            time.sleep(0.3)
            return deploy_result(serial, samples(1, 10))
        return run

    phones = [FakePhone(f"D{i}", run=slow(f"D{i}")) for i in range(4)]
    params = BenchParams(repeat=2, iterations=10, probe_state=False)
    t0 = time.perf_counter()
    run_bench([bundle], [p.target() for p in phones], params, work_dir=tmp_path)
    # 4 devices x 2 runs x 0.3 s: 2.4 s one after another, 0.6 s side by side.
    assert time.perf_counter() - t0 < 1.5


def test_cooldown_separates_runs_on_one_device(bundle, tmp_path):
    starts: list[float] = []

    def run(config):
        starts.append(time.monotonic())
        return deploy_result("A", samples(0, 5))

    params = BenchParams(repeat=3, iterations=5, cooldown_s=0.2, probe_state=False)
    run_bench([bundle], [FakePhone("A", run=run).target()], params, work_dir=tmp_path)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2 and all(g >= 0.2 for g in gaps)


def test_sweeps_and_per_device_affinity(bundle, tmp_path):
    seen: list[RunConfig] = []

    def run(config):
        seen.append(config)
        return deploy_result("A", samples(0, config.iterations), config=config)

    params = BenchParams(repeat=1, iterations=5, threads=(1, 4), eps=("cpu", "xnnpack"),
                         cpu_affinity="0f", probe_state=False)
    phone = FakePhone("A", run=run).target()
    pinned = Target(phone.serial, phone.run, phone.describe, phone.shell, cpu_affinity="f0")
    result = run_bench([bundle], [pinned], params, work_dir=tmp_path)
    assert [config_key(c) for c in seen] == ["cpu/t1/cpu=f0", "cpu/t4/cpu=f0",
                                             "xnnpack/t1/cpu=f0", "xnnpack/t4/cpu=f0"]
    assert [g.config_key for g in result.groups()] == [config_key(c) for c in seen]
    assert config_key(RunConfig(threads=2, optimization="basic", nnapi_fp16=True, ep="nnapi")) \
        == "nnapi/t2/opt=basic/fp16"


def test_bad_parameters_fail_before_any_device_runs():
    with pytest.raises(EdgepackError, match="unknown execution provider 'gpu'"):
        BenchParams(eps=("cpu", "gpu"))
    with pytest.raises(EdgepackError, match="--repeat"):
        BenchParams(repeat=0)
    with pytest.raises(EdgepackError, match="not a CPU mask"):
        BenchParams(cpu_affinity="0x0")
    assert parse_cpu_mask("f0") == frozenset({4, 5, 6, 7})
    assert parse_cpu_mask("0x3") == frozenset({0, 1})


# ---------------------------------------------------------------------------- device state


def test_state_before_and_after_and_heat_warnings(bundle, tmp_path):
    hot = FakePhone("hot", heat=3.0)  # +3 °C per probe: battery and CPU warm during a run
    throttled = FakePhone("thr", throttle_after=1)  # throttles from the first run's end
    result = run_bench([bundle], [hot.target(), throttled.target()],
                       BenchParams(repeat=1, iterations=10), work_dir=tmp_path)
    h = next(r for r in result.runs if r.serial == "hot")
    assert h.state_before is not None and h.state_after is not None
    assert h.state_before.battery_level == 80 and h.state_before.powered == "usb"
    assert h.state_after.battery_temp_c - h.state_before.battery_temp_c == pytest.approx(3.0)
    assert h.state_before.cpus[0].governor == "schedutil"
    assert any(w.startswith("heated: battery") for w in h.warnings)
    assert any(w.startswith("heated: hottest sensor") for w in h.warnings) is False  # +3 < 5
    t = next(r for r in result.runs if r.serial == "thr")
    assert any("thermal status rose from 0 (none) to 2 (moderate)" in w for w in t.warnings)
    assert any("max CPU frequency lowered" in w and "cpu4 2400->1200 MHz" in w
               for w in t.warnings)


def test_state_parses_the_virtual_devices_dumpsys():
    sysinfo = pytest.importorskip("edgepack.devices.virtual.sysinfo")
    battery, thermal = sysinfo.Battery(level=57, temperature=312), sysinfo.Thermal(status=1)
    state = parse_state(f"@@battery\n{battery.dumpsys()}@@thermal\n{thermal.dumpsys()}"
                        "@@cpufreq\n@@zones\nthermal_zone0|soc|45500\n")
    assert (state.battery_level, state.battery_temp_c, state.thermal_status) == (57, 31.2, 1)
    assert state.temps_c["cpu0"] == 35.0 and state.temps_c["soc"] == 45.5
    assert state.max_temp_c == 45.5  # the battery sensor is not a CPU's heat
    assert state_warnings(state, state) == ["throttled: thermal status 1 (light)"]


def test_a_device_without_state_gives_none_and_no_warning():
    assert parse_state("@@battery\n@@thermal\n@@cpufreq\n@@zones\n").empty
    assert state_warnings(None, None) == []
    assert state_warnings(None, DeviceState(taken_at="t")) == []


# ---------------------------------------------------------------------------- profiles



def _profiled_run(engine, bundle, tmp_path, request, config):
    if engine == "native":
        from edgepack.runner.local import run_local

        return run_local(request.getfixturevalue("host_runner"), bundle.predict_path,
                         bundle.set_dir(0), tmp_path / "out", config,
                         profile_prefix=str(tmp_path / "prof"))
    from edgepack.runner.python_engine import run_python

    return run_python(bundle.predict_path, bundle.set_dir(0), tmp_path / "out", config,
                      profile_prefix=str(tmp_path / "prof"))


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_real_profile_counts_only_the_timed_iterations(engine, bundle, tmp_path, request):
    result = _profiled_run(engine, bundle, tmp_path, request, RunConfig(warmup=3, iterations=5))
    trace = json.loads(open(result.profile_file, encoding="utf-8").read())
    trace = trace["traceEvents"] if isinstance(trace, dict) else trace
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    # onnxruntime traces the whole session: the first inference, 3 warm-ups, 5 timed runs.
    assert len(runs) == 1 + 3 + 5 and len(result.latencies_ms) == 5
    kernels = [e for e in trace if e.get("cat") == "Node"
               and e["name"].endswith("_kernel_time")]
    nodes: dict[tuple[str, str], set[str]] = {}
    for e in kernels:
        nodes.setdefault((e["args"]["op_name"], e["args"]["provider"]), set()).add(e["name"])

    def kernel_ms(span):
        return sum(e["dur"] for e in kernels if span[0] <= e["ts"] <= span[1]) / 1000

    ops = parse_profile(result.profile_file, len(result.latencies_ms))
    assert {"Conv", "ReduceMean"} <= {op.op_type for op in ops}
    assert all(op.provider == "CPUExecutionProvider" for op in ops)
    assert {op.iterations for op in ops} == {5}
    # Every node ran once per timed iteration, not 9 times over the session.
    assert {(op.op_type, op.provider): op.calls_per_iteration for op in ops} == {
        key: len(names) for key, names in nodes.items()}
    assert all(op.calls == 5 * len(nodes[(op.op_type, op.provider)]) for op in ops)
    total = sum(op.total_ms for op in ops)
    assert total == pytest.approx(sum(kernel_ms(r) for r in runs[-5:]))
    first = kernel_ms(runs[0])
    assert first > 0 and sum(e["dur"] for e in kernels) / 1000 - total >= first - 1e-9
    assert sum(op.share for op in ops) == pytest.approx(1.0)
    assert ops == sorted(ops, key=lambda o: -o.total_ms)

    both = merge_op_times([ops, ops])
    assert [o.op_type for o in both] == [o.op_type for o in ops]
    assert both[0].total_ms == pytest.approx(2 * ops[0].total_ms)
    assert both[0].share == pytest.approx(ops[0].share)
    assert both[0].iterations == 10
    assert both[0].calls_per_iteration == ops[0].calls_per_iteration


def _event(name, ts, dur, op=None, provider="CPUExecutionProvider", cat="Node"):
    args = {"op_name": op, "provider": provider} if op else {}
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_profile_reads_only_kernel_time_of_the_timed_runs(tmp_path):
    trace = [
        _event("model_loading_uri", 0, 50, cat="Session"),
        # The first inference: slow, and not one of the timed runs.
        _event("model_run", 100, 5000, cat="Session"),
        _event("conv_kernel_time", 110, 4000, "FusedConv", "XnnpackExecutionProvider"),
        # Two timed runs; a node event written before its run's event, as onnxruntime does.
        _event("conv_fence_before", 6005, 5, "Conv"),
        _event("conv_kernel_time", 6010, 600, "FusedConv", "XnnpackExecutionProvider"),
        _event("model_run", 6000, 1000, cat="Session"),
        _event("relu_kernel_time", 6700, 200, "Relu"),
        _event("model_run", 8000, 1000, cat="Session"),
        _event("conv_kernel_time", 8010, 200, "FusedConv", "XnnpackExecutionProvider"),
        _event("stray_kernel_time", 7500, 50, "Relu"),  # between runs
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(trace))
    ops = parse_profile(path, 2)
    assert [(o.op_type, o.provider, o.calls, o.total_ms, o.share, o.iterations) for o in ops] == [
        ("FusedConv", "XnnpackExecutionProvider", 2, 0.8, 0.8, 2),
        ("Relu", "CPUExecutionProvider", 1, 0.2, pytest.approx(0.2), 2),
    ]
    assert ops[0].calls_per_iteration == 1 and ops[0].ms_per_iteration == pytest.approx(0.4)
    path.write_text(json.dumps({"traceEvents": trace}))  # the object form reads the same
    assert parse_profile(path, 2) == ops
    # All three runs were asked for: the first inference's 4 ms are in.
    assert parse_profile(path, 3)[0].total_ms == pytest.approx(4.8)
    with pytest.raises(EdgepackError, match="3 model_run event.*fewer than the 4 timed"):
        parse_profile(path, 4)
    path.write_text("{not json")
    with pytest.raises(EdgepackError, match="unreadable onnxruntime profile"):
        parse_profile(path, 1)


# ---------------------------------------------------------------------------- the host


def test_the_host_as_a_target_keeps_outputs_and_profiles(bundle, tmp_path):
    params = BenchParams(repeat=1, iterations=5, threads=(1,), profile=True, cpu_affinity="1")
    result = run_bench([bundle], [host_target("python")], params, work_dir=tmp_path / "w")
    (run,) = result.runs
    assert run.status == "pass", run.error
    assert run.result is not None and run.result.engine == "python"
    assert run.device is not None and run.device.serial == "host"
    assert run.work_dir and list((tmp_path / "w").rglob("test_data_set_0/output_0.pb"))
    assert {op.op_type for op in run.profile} >= {"Conv"}
    assert {op.iterations for op in run.profile} == {5}
    # Profiling slows every iteration: a profiled run is kept apart from plain ones.
    assert run.config_key == "cpu/t1/cpu=1/profile"
    assert result.exit_code == ExitCode.OK


def test_a_device_profile_is_pulled_and_counts_the_timed_iterations(virtual_devices, host_runner,
                                                                     lab_bundle, tmp_path):
    from tests.conftest import run_cli

    device = virtual_devices.start(model="Pixel 7")
    r = run_cli("bench", lab_bundle, "--device", device.serial, "--repeat", "1", "--warmup", "3",
                "--iterations", "5", "--profile", "--db", tmp_path / "h.db", "--json")
    assert r.code == 0, r.stderr
    (g,) = r.json()["results"]
    assert g["config_key"] == "cpu/t1/profile" and g["warnings"] == []
    assert g["profile"] and {op["iterations"] for op in g["profile"]} == {5}
    # Each node once per timed iteration; 9 inferences over 5 would give 1.8 per node.
    assert all(op["calls_per_iteration"] == int(op["calls_per_iteration"]) >= 1
               for op in g["profile"])
