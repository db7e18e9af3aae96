"""`pack --inputs-from-bundle DET.bundle [--map OUT=IN]`: the second model of a pipeline fed
with the first's expected outputs, so the pair is benchmarked and compared as it runs together
(a face detector's crops into a face parser).

Outputs match inputs by name, or as --map says; every input must be fed, with the dtype and a
shape it accepts. Input set k of the new bundle is output set k of DET, and its manifest records
where each value came from (source kind `bundle`: DET's name, sha256, set and output).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError

if TYPE_CHECKING:
    from edgepack.bundle.schema import Manifest, TensorSpec
    from edgepack.inputs import InputValue


def parse_map(text: str) -> tuple[str, str]:
    """--map OUT=IN: output OUT of the first bundle feeds input IN."""
    out, sep, inp = text.partition("=")
    if not sep or not out or not inp:
        raise EdgepackError(f"--map {text!r}: expected OUT=IN (an output of the "
                            "--inputs-from-bundle bundle = an input of this model)")
    return out, inp


def sets_from_bundle(path: Path, specs: list[TensorSpec], mapping: list[tuple[str, str]]
                     ) -> list[list[InputValue]]:
    from edgepack.bundle.verify import load_bundle
    from edgepack.inputs import InputSource, InputValue, check_fits
    from edgepack.tensors import read_tensor

    bundle = load_bundle(Path(path))
    m = bundle.manifest
    flag = f"--inputs-from-bundle {path}"
    out_names = [o.name for o in m.outputs]
    in_names = [s.name for s in specs]
    feeds: dict[str, str] = {}  # input <- output
    for out, inp in mapping:
        if out not in out_names:
            raise EdgepackError(f"--map {out}={inp}: bundle {m.name!r} has no output {out!r} "
                                f"(its outputs: {', '.join(out_names)})")
        if inp not in in_names:
            raise EdgepackError(f"--map {out}={inp}: the model has no input {inp!r} "
                                f"(its inputs: {', '.join(in_names) or 'none'})")
        if inp in feeds:
            raise EdgepackError(f"--map: input {inp!r} is fed twice ({feeds[inp]} and {out})")
        feeds[inp] = out
    for name in in_names:
        if name not in feeds and name in out_names:
            feeds[name] = name
    missing = [n for n in in_names if n not in feeds]
    if missing:
        raise EdgepackError(
            f"{flag}: no output of bundle {m.name!r} feeds input(s) {', '.join(missing)} (its "
            f"outputs: {', '.join(out_names)}); name one with --map OUT=IN")
    sets = []
    for test_set in m.test_sets:
        files = {t.name: t for t in test_set.outputs}
        values = []
        for spec in specs:
            tensor = files[feeds[spec.name]]
            _, array = read_tensor(bundle.path / tensor.file)
            check_fits(spec, array, f"{flag}: set {test_set.index} output {tensor.name!r}")
            source = InputSource(
                "bundle", Path(tensor.file).name, _sha256(m, tensor.file),
                preprocess={"bundle": m.name, "bundle_sha256": bundle.sha256,
                            "set": test_set.index, "output": tensor.name})
            values.append(InputValue(spec.name, array, source))
        sets.append(values)
    return sets


def _sha256(manifest: Manifest, rel: str) -> str | None:
    return next((f.sha256 for f in manifest.files if f.path == rel), None)
