"""`--labels FILE`: what a classifier predicted, by name, on the host and on the device.

Which outputs are class scores is compare.class_count's rule (the same outputs that get top-1
and top-5 agreement). The host's side is the bundle's expected output (onnxruntime's CPU
provider when it was packed), the device's the output the run pulled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError, ExitCode

if TYPE_CHECKING:
    from edgepack.bundle import Bundle

TOP_K = 5
MAX_LABELS_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Scored:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class TopClasses:
    """The top classes of one row of one class-score output, host and device side by side."""

    set_index: int
    output: str
    row: int  # along N
    classes: int
    host: list[Scored]
    device: list[Scored] = field(default_factory=list)  # empty when the output is missing

    @property
    def top1_agrees(self) -> bool:
        return bool(self.device) and self.host[0].index == self.device[0].index


@dataclass(frozen=True)
class Labels:
    file: str
    names: list[str]
    outputs: dict[str, int]  # class-score output -> its number of classes


def load_labels(path: Path, bundle: Bundle) -> Labels:
    """Read FILE (one class name per line) and check it names every class of every class-score
    output, before anything runs."""
    from edgepack.compare import class_count

    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise EdgepackError(f"--labels {path}: larger than 16 MiB; not a labels file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgepackError(f"--labels {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepackError(f"--labels {path}: cannot read it as UTF-8 text ({exc})") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()  # a trailing newline or two is not a class
    if not names:
        raise EdgepackError(f"--labels {path}: holds no class names (one a line)")
    expected = bundle.expected_outputs(0)
    outputs = {n: c for n, a in expected.items() if (c := class_count(n, a)) is not None}
    if not outputs:
        shapes = ", ".join(f"{n} {list(a.shape)}" for n, a in expected.items())
        raise EdgepackError(f"--labels {path}: no output of {bundle.name} is class scores "
                            f"([N, C] or [N, C, 1, 1] floats; its outputs: {shapes})")
    for name, classes in outputs.items():
        if len(names) < classes:
            raise EdgepackError(f"--labels {path}: {len(names)} name(s) for the {classes} "
                                f"classes of output {name!r}", ExitCode.BAD_INPUT)
    return Labels(str(path), names, outputs)


def top_classes(bundle: Bundle, labels: Labels, outputs_root: Path) -> list[TopClasses]:
    """Top-5 of every row of every class-score output of every set: host (expected) beside
    device (the run's outputs under outputs_root/test_data_set_<k>/)."""
    from edgepack.compare import read_outputs

    result: list[TopClasses] = []
    for test_set in bundle.manifest.test_sets:
        expected = bundle.expected_outputs(test_set.index)
        actual = read_outputs(outputs_root / test_set.dir, list(expected))
        for name, classes in labels.outputs.items():
            host = expected[name]
            device = actual.get(name)
            if device is not None and device.size != host.size:
                device = None  # the verdict already says the shape differs
            rows = host.reshape(host.shape[0], classes)
            dev_rows = None if device is None else device.reshape(host.shape[0], classes)
            for r in range(rows.shape[0]):
                result.append(TopClasses(
                    test_set.index, name, r, classes, _top(rows[r], labels.names),
                    [] if dev_rows is None else _top(dev_rows[r], labels.names)))
    return result


def _top(scores: object, names: list[str]) -> list[Scored]:
    import numpy as np

    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    # Stable, so equal scores keep class order on both sides and ties do not look like changes.
    order = np.argsort(-values, kind="stable")[:TOP_K]
    return [Scored(int(i), names[int(i)], float(np.asarray(scores, dtype=np.float64)[i]))
            for i in order]


@dataclass(frozen=True)
class GroupTop:
    """bench --labels: the top classes of one device's runs of one bundle and configuration
    (its failing run's when one failed: the outputs worth looking at)."""

    serial: str
    bundle_name: str
    bundle_sha256: str
    config_key: str
    classes: list[TopClasses]


def labels_for_bundles(path: Path, bundles: list[Bundle]) -> dict[str, Labels]:
    """bench --labels: FILE for every bundle with class-score outputs (by sha256), checked
    before anything runs; bad input when no bundle has any."""
    from edgepack.compare import class_count

    labelled = {}
    for bundle in bundles:
        expected = bundle.expected_outputs(0)
        if any(class_count(n, a) is not None for n, a in expected.items()) or len(bundles) == 1:
            labelled[bundle.sha256] = load_labels(path, bundle)  # one bundle: its own error
    if not labelled:
        raise EdgepackError(f"--labels {path}: no output of {', '.join(b.name for b in bundles)} "
                            "is class scores ([N, C] or [N, C, 1, 1] floats)")
    return labelled
