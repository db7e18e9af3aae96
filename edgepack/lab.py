"""A device lab described in a file: which devices, on which adb servers, with which defaults.

    # lab.toml
    [defaults]                  # every key optional; command-line options win over these
    iterations = 50             # timed iterations per run
    repeat = 3                  # runs per device and configuration
    warmup = 1
    threads = [1, 4]            # an integer or a list: a sweep
    ep = ["cpu", "xnnpack"]     # a string or a list: a sweep
    cooldown = 5.0              # seconds between runs on one device, or "auto"
    min_iterations = 100        # validity: a run timing fewer iterations is invalid
    min_seconds = 10.0          # ...and each run iterates at least this long
    max_seconds = 60.0          # a run taking longer than this is semivalid
    cpu_affinity = "f0"         # taskset mask (hex) for the runner
    timeout = 600               # seconds one runner invocation may take
    threshold_percent = 5.0     # regress: a median this much slower...
    alpha = 0.01                # ...and Mann-Whitney U p below this is a latency regression

    [[servers]]                 # adb servers; none listed means the local one (127.0.0.1:5037)
    name = "rack1"              # optional, for devices' `server = ...`
    address = "10.0.0.5:5037"   # host:port: a lab machine or a device farm's remote adb

    [[devices]]                 # by serial...
    serial = "R58M41XYZ"
    cpu_affinity = "f0"         # per device: big.LITTLE phones differ in where the big cores are

    [[devices]]                 # the browser (headless Chromium, onnxruntime-web): no adb
    serial = "browser"          # server, no cpu_affinity (Chromium's threads are not pinned)

    [[devices]]                 # ...or by selector: every attached device that matches
    model = "Pixel 7*"          # ro.product.model; shell-style wildcards, case-insensitive
    abi = "arm64-v8a"           # one of the device's ABIs
    min_sdk = 30
    server = "rack1"            # only devices of that server
    max = 2                     # at most this many matching devices

Errors name the file, the line and the key (`lab.toml:12: devices[1].min_sdk: ...`): tomllib's
syntax errors carry a line; for a well-formed file with a wrong value the key's line is found by
reading the file's table headers and keys again.

Each setting of a bench or regress is layered in one place, `layer_settings`: the command line's
value when given, else lab.toml's (a device's own entry, then [defaults]), else the built-in
default. So `--cpu-affinity` wins over a [[devices]] entry's mask too.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgepack.devices.adb import ServerAddress
from edgepack.devices.base import DeviceInfo
from edgepack.errors import EdgepackError, ExitCode
from edgepack.limits import MAX_ITERATIONS, MAX_SECONDS, MAX_THREADS, MIN_TIMEOUT, number_text

if TYPE_CHECKING:
    from edgepack.bench import Target
    from edgepack.records import BenchParams

KeyPath = tuple[str | int, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class AdbServer:
    name: str
    address: ServerAddress


@dataclass(frozen=True)
class LabDefaults:
    """Values a command uses when its own option is not given; None: the command's default."""

    iterations: int | None = None
    repeat: int | None = None
    warmup: int | None = None
    threads: list[int] | None = None
    ep: list[str] | None = None
    cooldown: float | str | None = None  # seconds, or "auto"
    cpu_affinity: str | None = None
    timeout: float | None = None
    threshold_percent: float | None = None
    alpha: float | None = None
    min_iterations: int | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None


@dataclass(frozen=True)
class DeviceSelector:
    """One [[devices]] entry: a serial, or a selector matched against attached devices."""

    line: int | None
    serial: str | None = None
    model: str | None = None
    abi: str | None = None
    min_sdk: int | None = None
    server: str | None = None
    max: int | None = None
    cpu_affinity: str | None = None

    def matches(self, info: DeviceInfo) -> bool:
        if self.serial is not None:
            return info.serial == self.serial
        if self.model is not None and not fnmatch.fnmatch(
            (info.model or "").casefold(), self.model.casefold()
        ):
            return False
        if self.abi is not None and self.abi not in info.abis:
            return False
        return self.min_sdk is None or (info.sdk is not None and info.sdk >= self.min_sdk)

    def describe(self) -> str:
        if self.serial is not None:
            return f"serial {self.serial}"
        parts = [f"model {self.model!r}" if self.model else None,
                 f"ABI {self.abi}" if self.abi else None,
                 f"SDK >= {self.min_sdk}" if self.min_sdk is not None else None,
                 f"on server {self.server}" if self.server else None]
        return ", ".join(p for p in parts if p) or "any device"


@dataclass(frozen=True)
class Lab:
    path: Path
    defaults: LabDefaults = field(default_factory=LabDefaults)
    servers: list[AdbServer] = field(default_factory=list)
    devices: list[DeviceSelector] = field(default_factory=list)
    # [bundles.NAME] ep = "nnapi": a bundle's own providers (by manifest name or path).
    bundle_eps: dict[str, list[str]] = field(default_factory=dict)

    def server_list(self) -> list[AdbServer]:
        """The lab's servers; none listed: the one adb itself would use (ANDROID_ADB_SERVER_*)."""
        if self.servers:
            return self.servers
        address = ServerAddress.from_env()
        return [AdbServer(str(address), address)]


@dataclass(frozen=True)
class SelectedDevice:
    server: AdbServer
    info: DeviceInfo
    selector: DeviceSelector | None


# ---------------------------------------------------------------------------- loading


_TOP_KEYS = ("defaults", "servers", "devices", "bundles")
# The device name (--device, lab.toml's serial) of headless Chromium on this machine.
BROWSER = "browser"
_DEFAULT_KEYS = tuple(LabDefaults.__dataclass_fields__)
_SERVER_KEYS = ("name", "address")
_DEVICE_KEYS = ("serial", "model", "abi", "min_sdk", "server", "max", "cpu_affinity")


def load_lab(path: Path) -> Lab:
    import tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgepackError(f"{path}: no such lab file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepackError(f"{path}: cannot read the lab file ({exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)"; put the line where every other error has it.
        message = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", message)
        line = m.group(1) if m else "?"
        raise EdgepackError(f"{path}:{line}: not valid TOML: {message}") from None
    return _LabReader(path, text).read(doc)


class _LabReader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _KeyLines(text)

    def fail(self, key: KeyPath, problem: str) -> EdgepackError:
        line = self.lines.find(key)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        return EdgepackError(f"{where}: {_key_text(key)}: {problem}", ExitCode.BAD_INPUT)

    def check_keys(self, table: dict[str, Any], known: tuple[str, ...], prefix: KeyPath) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
                raise self.fail((*prefix, key), f"unknown key ({hint})")

    def read(self, doc: dict[str, Any]) -> Lab:
        self.check_keys(doc, _TOP_KEYS, ())
        defaults = self.defaults(self.table(doc, "defaults"))
        servers = [self.server(entry, i) for i, entry in enumerate(self.array(doc, "servers"))]
        names = [s.name for s in servers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise self.fail(("servers", i, "name"), f"server {name!r} is listed twice")
        devices = [self.device(entry, i, names) for i, entry in enumerate(self.array(doc,
                                                                                     "devices"))]
        bundle_eps = {name: self.eps(entry, ("bundles", name))
                      for name, entry in self.table(doc, "bundles").items()}
        return Lab(self.path, defaults, servers, devices, bundle_eps)

    def eps(self, t: Any, k: KeyPath) -> list[str]:
        from edgepack.runner.result import EXECUTION_PROVIDERS

        if not isinstance(t, dict):
            raise self.fail(k, f"expected a table with ep = ..., not {_kind(t)}")
        self.check_keys(t, ("ep",), k)
        ep = t.get("ep")
        ep = [ep] if isinstance(ep, str) else ep
        if not isinstance(ep, list) or not ep or not all(
            isinstance(e, str) and e in EXECUTION_PROVIDERS for e in ep
        ):
            raise self.fail((*k, "ep"), f"expected one or a list of "
                            f"{', '.join(EXECUTION_PROVIDERS)}, not {t.get('ep')!r}")
        return ep

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail((key,), f"expected a table ([{key}]), not {_kind(value)}")
        return value

    def array(self, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail((key,), f"expected an array of tables ([[{key}]]), not {_kind(value)}")
        return value

    def defaults(self, t: dict[str, Any]) -> LabDefaults:
        self.check_keys(t, _DEFAULT_KEYS, ("defaults",))
        k: KeyPath = ("defaults",)
        threads = t.get("threads")
        if threads is not None:
            threads = [threads] if not isinstance(threads, list) else threads
            if not threads or not all(_is_int(x) and 0 <= x <= MAX_THREADS for x in threads):
                raise self.fail((*k, "threads"), f"expected an integer from 0 to {MAX_THREADS} "
                                f"or a non-empty list of them, not {t['threads']!r}")
        ep = t.get("ep")
        if ep is not None:
            from edgepack.runner.result import EXECUTION_PROVIDERS

            ep = [ep] if isinstance(ep, str) else ep
            if not isinstance(ep, list) or not ep or not all(
                isinstance(e, str) and e in EXECUTION_PROVIDERS for e in ep
            ):
                raise self.fail((*k, "ep"), f"expected one or a list of "
                                f"{', '.join(EXECUTION_PROVIDERS)}, not {t['ep']!r}")
        threshold = self.number(t, k, "threshold_percent", minimum=0.0)
        alpha = self.number(t, k, "alpha", minimum=0.0)
        if alpha is not None and not 0 < alpha < 1:
            raise self.fail((*k, "alpha"), f"expected a probability between 0 and 1, not {alpha}")
        return LabDefaults(
            iterations=self.integer(t, k, "iterations", minimum=1, maximum=MAX_ITERATIONS),
            repeat=self.integer(t, k, "repeat", minimum=1),
            warmup=self.integer(t, k, "warmup", minimum=0, maximum=MAX_ITERATIONS),
            threads=threads,
            ep=ep,
            cooldown=("auto" if t.get("cooldown") == "auto" else
                      self.number(t, k, "cooldown", minimum=0.0, maximum=MAX_SECONDS)),
            min_iterations=self.integer(t, k, "min_iterations", minimum=0,
                                        maximum=MAX_ITERATIONS),
            min_seconds=self.number(t, k, "min_seconds", minimum=0.0, maximum=MAX_SECONDS),
            max_seconds=self.positive(t, k, "max_seconds"),
            cpu_affinity=self.mask(t, k, "cpu_affinity"),
            timeout=self.number(t, k, "timeout", minimum=MIN_TIMEOUT, maximum=MAX_SECONDS),
            threshold_percent=threshold,
            alpha=alpha,
        )

    def server(self, t: dict[str, Any], index: int) -> AdbServer:
        k: KeyPath = ("servers", index)
        self.check_keys(t, _SERVER_KEYS, k)
        address = t.get("address")
        if not isinstance(address, str):
            raise self.fail((*k, "address") if "address" in t else k,
                            "every server needs address = \"host:port\"")
        name = t.get("name")
        if name is not None and not isinstance(name, str):
            raise self.fail((*k, "name"), f"expected a string, not {_kind(name)}")
        try:
            parsed = ServerAddress.parse(address)
        except EdgepackError as exc:
            raise self.fail((*k, "address"), exc.message) from None
        return AdbServer(name or str(parsed), parsed)

    def device(self, t: dict[str, Any], index: int, servers: list[str]) -> DeviceSelector:
        k: KeyPath = ("devices", index)
        self.check_keys(t, _DEVICE_KEYS, k)
        strings = {}
        for key in ("serial", "model", "abi", "server"):
            value = t.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise self.fail((*k, key), f"expected a non-empty string, not {value!r}")
            strings[key] = value
        if strings["serial"] is None and not any(
            key in t for key in ("model", "abi", "min_sdk")
        ):
            raise self.fail(k, "a device needs a serial or a selector (model, abi, min_sdk)")
        if strings["serial"] is not None and any(key in t for key in ("model", "abi", "min_sdk",
                                                                       "max")):
            extra = next(key for key in ("model", "abi", "min_sdk", "max") if key in t)
            raise self.fail((*k, extra), "give a serial or a selector, not both")
        if strings["serial"] == BROWSER:
            extra = next((key for key in ("server", "cpu_affinity") if key in t), None)
            if extra is not None:
                raise self.fail((*k, extra), f"the browser is this machine's Chromium: it has "
                                f"no {extra}")
        server = strings["server"]
        if server is not None and server not in servers:
            known = ", ".join(servers) if servers else "none: add a [[servers]] table"
            raise self.fail((*k, "server"), f"no server named {server!r} (servers: {known})")
        return DeviceSelector(
            line=self.lines.find(k),
            serial=strings["serial"],
            model=strings["model"],
            abi=strings["abi"],
            min_sdk=self.integer(t, k, "min_sdk", minimum=1),
            server=server,
            max=self.integer(t, k, "max", minimum=1),
            cpu_affinity=self.mask(t, k, "cpu_affinity"),
        )

    def integer(self, t: dict[str, Any], k: KeyPath, key: str, minimum: int,
                maximum: int | None = None) -> int | None:
        value = t.get(key)
        if value is None:
            return None
        if not _is_int(value) or value < minimum:
            raise self.fail((*k, key), f"expected an integer >= {minimum}, not {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail((*k, key), f"expected an integer <= {maximum}, not {value!r}")
        return int(value)

    def number(self, t: dict[str, Any], k: KeyPath, key: str, minimum: float,
               maximum: float | None = None) -> float | None:
        value = t.get(key)
        if value is None:
            return None
        # TOML spells nan and inf, and nan compares false with any bound.
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < minimum):
            raise self.fail((*k, key), f"expected a number >= {number_text(minimum)}, "
                            f"not {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail((*k, key), f"expected a number <= {number_text(maximum)}, "
                            f"not {value!r}")
        return float(value)

    def positive(self, t: dict[str, Any], k: KeyPath, key: str) -> float | None:
        value = self.number(t, k, key, minimum=0.0, maximum=MAX_SECONDS)
        if value == 0:
            raise self.fail((*k, key), "expected a number > 0 (leave it out for no cap)")
        return value

    def mask(self, t: dict[str, Any], k: KeyPath, key: str) -> str | None:
        value = t.get(key)
        if value is None:
            return None
        from edgepack.runner.result import parse_cpu_mask

        try:
            parse_cpu_mask(str(value) if isinstance(value, str) else "")
        except EdgepackError as exc:
            raise self.fail((*k, key), exc.message) from None
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _key_text(key: KeyPath) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class _KeyLines:
    """Where a key is defined in a TOML text, found again after tomllib has parsed it.

    tomllib returns plain dicts without positions. This reads the text's table headers
    ([a.b], [[a]]) and `key =` lines, enough for the shapes a lab file has; for a key written
    another way (inline tables, dotted keys) it falls back to the line of the enclosing table.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")

    def __init__(self, text: str) -> None:
        self.keys: dict[KeyPath, int] = {}
        counts: dict[tuple[str, ...], int] = {}
        table: KeyPath = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                names = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                if header.group(1) == "[[":
                    index = counts.get(names, 0)
                    counts[names] = index + 1
                    table = (*names, index)
                else:
                    table = names
                self.keys.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                name = key.group(1) or key.group(2) or key.group(3)
                self.keys.setdefault((*table, name), number)

    def find(self, key: KeyPath) -> int | None:
        while key:
            if key in self.keys:
                return self.keys[key]
            key = key[:-1]
        return None


# ---------------------------------------------------------------------------- layering


@dataclass(frozen=True)
class GivenOptions:
    """What the command line gave bench or regress: None where an option was not given. The
    lists (--threads, --ep) are as typed: layer_settings parses them."""

    device: str | None = None
    lab: Path | None = None
    repeat: int | None = None
    iterations: int | None = None
    warmup: int | None = None
    cooldown: str | None = None  # seconds, or auto
    min_iterations: int | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None
    threads: str | None = None
    ep: str | None = None
    cpu_affinity: str | None = None
    timeout: float | None = None
    engine: str = "auto"
    db: Path | None = None
    label: str | None = None
    report_dir: Path | None = None
    profile: bool = False  # bench's own
    top: int = 10
    threshold_percent: float | None = None  # regress's own
    alpha: float | None = None
    strict_ep: bool = False


@dataclass(frozen=True)
class LabSettings:
    """What a bench or regress runs with, each setting layered by layer_settings."""

    params: BenchParams
    threshold: float  # regress: a median this much slower (0.05: 5 %)...
    alpha: float  # ...and a Mann-Whitney U p below this is a latency regression
    lab: Lab | None = None
    device: str | None = None  # --device as given; None: lab.toml's [[devices]], else all
    engine: str = "auto"
    db: Path | None = None
    label: str | None = None
    report_dir: Path | None = None
    affinity_given: bool = False  # --cpu-affinity was given, and wins over lab.toml's devices

    def device_affinity(self, info: DeviceInfo,
                        selector: DeviceSelector | None = None) -> str | None:
        """The CPU mask `info`'s device runs under: --cpu-affinity, else its lab.toml entry's
        (`selector`, the entry that chose it; else the first matching entry with a mask), else
        [defaults]' (params.cpu_affinity), else none."""
        if self.affinity_given or self.lab is None:
            return self.params.cpu_affinity
        if selector is None:
            selector = next((s for s in self.lab.devices if s.cpu_affinity and s.matches(info)),
                            None)
        own = selector.cpu_affinity if selector is not None else None
        return own or self.params.cpu_affinity


def layer_settings(given: GivenOptions) -> LabSettings:
    """The command line over lab.toml (read here, from --lab) over the built-in defaults, for
    every setting of bench and regress, in one place.

    A bad value fails here, named where it came from: the option (`--threads '1,x': ...`) or the
    file, line and key (`lab.toml:3: defaults.iterations: ...`).
    """
    from edgepack.option_values import parse_cooldown, parse_cpu_affinity, parse_threads
    from edgepack.records import BenchParams
    from edgepack.regress import DEFAULT_ALPHA, DEFAULT_THRESHOLD

    lab = load_lab(given.lab) if given.lab is not None else None
    d = lab.defaults if lab is not None else LabDefaults()
    built = BenchParams()
    threads = parse_threads(given.threads) if given.threads is not None else None
    affinity = (parse_cpu_affinity(given.cpu_affinity) if given.cpu_affinity is not None
                else None)
    eps, bundle_eps = _split_eps(given.ep)
    cooldown = parse_cooldown(given.cooldown) if given.cooldown is not None else d.cooldown
    cooldown_auto = cooldown in (None, "auto") and (given.cooldown is not None
                                                    or d.cooldown == "auto")
    cooldown_s = (0.0 if cooldown_auto else
                  float(cooldown) if cooldown is not None else built.cooldown_s)
    named = tuple(name for name, _ in bundle_eps)
    if lab is not None:
        # The command line's per-bundle providers win over lab.toml's for the same bundle.
        bundle_eps += [(name, tuple(e)) for name, e in lab.bundle_eps.items() if name not in named]
    params = BenchParams(
        repeat=_first(given.repeat, d.repeat, built.repeat),
        iterations=_first(given.iterations, d.iterations, built.iterations),
        warmup=_first(given.warmup, d.warmup, built.warmup),
        cooldown_s=cooldown_s,
        cooldown_auto=cooldown_auto,
        min_iterations=_first(given.min_iterations, d.min_iterations, built.min_iterations),
        min_seconds=_first(given.min_seconds, d.min_seconds, built.min_seconds),
        max_seconds=_first(given.max_seconds, d.max_seconds, built.max_seconds),
        threads=tuple(_first(threads, d.threads, built.threads)),
        eps=tuple(_first(eps, d.ep, built.eps)),
        cpu_affinity=_first(affinity, d.cpu_affinity, built.cpu_affinity),
        profile=given.profile,
        top_ops=given.top,
        timeout_s=_first(given.timeout, d.timeout, built.timeout_s),
        strict_ep=given.strict_ep,
        bundle_eps=tuple(bundle_eps),
        eps_named=named,
    )
    percent = _first(given.threshold_percent, d.threshold_percent, DEFAULT_THRESHOLD * 100)
    return LabSettings(
        params=params,
        threshold=percent / 100,
        alpha=_first(given.alpha, d.alpha, DEFAULT_ALPHA),
        lab=lab,
        device=given.device,
        engine=given.engine,
        db=given.db,
        label=given.label,
        report_dir=given.report_dir,
        affinity_given=given.cpu_affinity is not None,
    )


def _split_eps(text: str | None) -> tuple[tuple[str, ...] | None,
                                         list[tuple[str, tuple[str, ...]]]]:
    """`--ep cpu,xnnpack,det=nnapi,parser.bundle=cpu`: the sweep (None when only per-bundle
    entries were given) and the bundles' own providers, BUNDLE=EP each."""
    from edgepack.option_values import parse_eps, parse_list

    if text is None:
        return None, []
    items = parse_list("--ep", text)
    sweep = [i for i in items if "=" not in i]
    own: dict[str, list[str]] = {}
    for item in items:
        if "=" in item:
            bundle, _, ep = item.partition("=")
            if not bundle.strip() or not ep.strip():
                raise EdgepackError(f"--ep {text!r}: {item!r} is not BUNDLE=EP")
            own.setdefault(bundle.strip(), []).extend(parse_eps(ep))
    return (parse_eps(",".join(sweep)) if sweep else None,
            [(b, tuple(dict.fromkeys(e))) for b, e in own.items()])


def _first(given: T | None, in_lab: T | None, default: T) -> T:
    """The command line's value, else lab.toml's, else the default."""
    return given if given is not None else in_lab if in_lab is not None else default


# ---------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Missing:
    """A device the lab counts on that is not there: reported as that device's error."""

    name: str  # its serial, or the selector's place in the file
    reason: str


def select_devices(
    lab: Lab, inventory: list[tuple[AdbServer, DeviceInfo]]
) -> tuple[list[SelectedDevice], list[Missing]]:
    """Resolve the lab's [[devices]] against what the adb servers list.

    A serial that no server lists, or a selector that matches nothing, is not silently dropped:
    it comes back as Missing and the bench reports it as that device's error, because a lab run
    that quietly tests fewer phones than its file says looks green for the wrong reason. A device
    matched by several entries is run once, with the first entry's settings.
    """
    chosen: list[SelectedDevice] = []
    missing: list[Missing] = []
    seen: set[str] = set()
    for selector in lab.devices or [DeviceSelector(line=None)]:
        matched = 0
        for server, info in inventory:
            if selector.server is not None and server.name != selector.server:
                continue
            if info.state != "device" or not selector.matches(info):
                continue
            if selector.max is not None and matched >= selector.max:
                break
            matched += 1
            if info.serial not in seen:
                seen.add(info.serial)
                chosen.append(SelectedDevice(server, info, selector))
        if matched == 0 and lab.devices:
            where = f"{lab.path.name}:{selector.line}" if selector.line else lab.path.name
            attached = ", ".join(f"{i.serial} ({i.model or '?'}, {i.state})"
                                 for _, i in inventory) or "none"
            missing.append(Missing(
                selector.serial or where,
                f"{where}: no attached device matches {selector.describe()} "
                f"(attached: {attached})"))
    return chosen, missing


def inventory(
    servers: list[AdbServer], only: set[str] | None = None
) -> tuple[list[tuple[AdbServer, DeviceInfo]], list[str]]:
    """Every device on every server, with its facts (read for the serials in `only`, if given,
    and in parallel: a lab has dozens of phones); notes for servers or devices that fail."""
    from concurrent.futures import ThreadPoolExecutor

    from edgepack.devices.adb import AdbDevice, list_serials

    listed: list[tuple[AdbServer, str, str]] = []
    notes: list[str] = []
    for server in servers:
        try:
            listed += [(server, d.serial, d.state) for d in list_serials(server.address)]
        except EdgepackError as exc:
            notes.append(f"adb server {server.name}: {exc.message}")
    if notes and len(notes) == len(servers):
        raise EdgepackError("no adb server answered: " + "; ".join(notes), ExitCode.DEVICE)

    def facts(entry: tuple[AdbServer, str, str]) -> DeviceInfo | str:
        server, serial, state = entry
        if state != "device" or (only is not None and serial not in only):
            return DeviceInfo(serial, "android", state)
        try:
            return AdbDevice(serial, server.address).info()
        except EdgepackError as exc:
            return f"{serial} on {server.name}: {exc.message}"

    found: list[tuple[AdbServer, DeviceInfo]] = []
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(listed)))) as pool:
        for (server, _, _), info in zip(listed, pool.map(facts, listed), strict=True):
            if isinstance(info, str):
                notes.append(info)
            else:
                found.append((server, info))
    return found, notes


def resolve_targets(settings: LabSettings) -> tuple[list[Target], list[str]]:
    """--device (host, browser, all, or SERIAL,SERIAL; `host` and `browser` may be in the list)
    and --lab -> the bench's targets, each with its CPU mask, and notes about what was left out.

    Without --device, a lab's [[devices]] are used (`serial = "browser"` among them), else every
    attached device. A serial or selector that finds no device becomes a target that fails, so
    the report names it. A provider or a CPU mask that some chosen device cannot take fails here,
    before anything runs (exit 2).
    """
    from edgepack.bench import device_target, host_target, missing_target
    from edgepack.devices.adb import AdbDevice

    lab, engine = settings.lab, settings.engine
    servers = lab.server_list() if lab else Lab(Path("-")).server_list()
    spec = settings.device.strip() if settings.device else None
    if spec is None and lab is not None and lab.devices:
        adb = [s for s in lab.devices if s.serial != BROWSER]
        browser = len(adb) < len(lab.devices)
        _check_fit(settings, browser=browser, native=bool(adb))
        targets: list[Target] = []
        notes: list[str] = []
        if adb:
            found, notes = inventory(servers)
            chosen, missing = select_devices(Lab(lab.path, lab.defaults, lab.servers, adb), found)
            targets = [device_target(AdbDevice(c.info.serial, c.server.address),
                                     cpu_affinity=settings.device_affinity(c.info, c.selector))
                       for c in chosen]
            targets += [missing_target(m.name, m.reason) for m in missing]
        return targets + ([_browser_target()] if browser else []), notes
    names = [n.strip() for n in (spec or "all").split(",") if n.strip()]
    if not names:
        raise EdgepackError("--device needs host, browser, all, or a comma-separated list of "
                            "serials")
    _check_fit(settings, browser=BROWSER in names, native=any(n != BROWSER for n in names))
    local = {"host": lambda: host_target(engine), BROWSER: _browser_target}
    if set(names) <= set(local):
        return [local[name]() for name in dict.fromkeys(names)], []
    found, notes = inventory(servers, only=None if names == ["all"] else set(names))
    ready = [(server, info) for server, info in found if info.state == "device"]
    if names == ["all"]:
        if not ready:
            where = ", ".join(s.name for s in servers)
            raise EdgepackError(f"no device is attached to the adb server(s) at {where}; pass "
                                "--device host to bench this machine", ExitCode.DEVICE)
        targets = [device_target(AdbDevice(info.serial, server.address),
                                 cpu_affinity=settings.device_affinity(info))
                   for server, info in ready]
        return targets, notes
    targets = []
    for name in dict.fromkeys(names):
        if name in local:
            targets.append(local[name]())
            continue
        match = next(((server, info) for server, info in found if info.serial == name), None)
        if match is None or match[1].state != "device":
            state = f"is {match[1].state}" if match else "is not attached"
            where = ", ".join(s.name for s in servers)
            targets.append(missing_target(name, f"device {name} {state} (adb server(s): "
                                                f"{where})"))
        else:
            targets.append(device_target(AdbDevice(name, match[0].address),
                                         cpu_affinity=settings.device_affinity(match[1])))
    return targets, notes


def _browser_target() -> Target:
    from edgepack.web.executor import browser_target

    return browser_target()


def _check_fit(settings: LabSettings, *, browser: bool, native: bool) -> None:
    """Every provider the sweep (or a bundle's own) asks for must run on every device chosen,
    and the browser takes no CPU mask: said once, before any run, rather than as one failed run
    per device and configuration."""
    from edgepack.runner.result import BROWSER_EPS, NATIVE_EPS

    p = settings.params
    eps = dict.fromkeys([*p.eps, *(e for _, own in p.bundle_eps for e in own)])
    if browser:
        bad = [e for e in eps if e in NATIVE_EPS and e != "cpu"]
        if bad:
            raise EdgepackError(f"--ep {bad[0]} runs in the native runner, not in the browser: "
                                f"the browser takes cpu, {', '.join(BROWSER_EPS)}")
        if p.cpu_affinity:
            raise EdgepackError(f"cpu affinity {p.cpu_affinity} pins the native runner; "
                                "Chromium's threads are not pinned: leave the mask out when "
                                "the browser is among the devices (lab.toml: give it per device)")
    if native:
        bad = [e for e in eps if e in BROWSER_EPS]
        if bad:
            raise EdgepackError(f"--ep {bad[0]} runs in a browser: pass --device browser "
                                "(beside other devices, use --ep cpu: the browser's is wasm)")
