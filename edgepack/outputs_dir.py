"""`run` / `deploy --outputs DIR`: a run's outputs kept where a person can open them.

Each output lands as the runner wrote it, test_data_set_<k>/output_<i>.pb (ONNX test-data
layout, so the directory feeds `pack --inputs-from` and onnx's own tools), and beside it as
output_<i>.npy for `np.load`. numpy cannot name ml_dtypes' types in a .npy header without
ml_dtypes installed (the file would load as raw void bytes), so those are saved widened to a
numpy type that holds every one of their values exactly: bfloat16, the float8s and float4 as
float32; int4, int2 as int8; uint4, uint2 as uint8. Strings are saved as a numpy str array (an
object array would need pickle to load).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError, ExitCode

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.labels import Labels
    from edgepack.records import DeployResult


@dataclass(frozen=True)
class Widened:
    """One .npy file that holds another type than its output: what and why."""

    file: str  # relative to the outputs directory
    dtype: str  # the output's
    saved_as: str  # the .npy file's


def prepare(directory: Path, force: bool) -> None:
    """Refuse a non-empty directory without --force (a second run would mix its files with the
    first's, and nobody could tell which set came from which run); make it otherwise."""
    if directory.exists() and not directory.is_dir():
        raise EdgepackError(f"--outputs {directory}: File exists and is not a directory",
                            ExitCode.BAD_INPUT)
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise EdgepackError(f"--outputs {directory}: the directory is not empty; pass --force to "
                            "write into it (files of the same names are replaced)",
                            ExitCode.BAD_INPUT)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgepackError(f"--outputs {directory}: {exc.strerror or exc}",
                            ExitCode.BAD_INPUT) from None


_WIDER = {"float": "float32", "int": "int8", "uint": "uint8"}


def write_npy(directory: Path, set_dirs: list[str]) -> list[Widened]:
    """output_<i>.npy beside every output_<i>.pb of the given sets; the files widened."""
    import numpy as np

    from edgepack import dtypes
    from edgepack.fileio import atomic_write_bytes
    from edgepack.tensors import STRING, array_dtype, read_tensor

    widened: list[Widened] = []
    for set_dir in set_dirs:
        for pb in sorted((directory / set_dir).glob("output_*.pb")):
            _, array = read_tensor(pb)
            name = array_dtype(array)
            row = dtypes.lookup(name)
            if name == STRING:
                array = np.array([str(v) if not isinstance(v, bytes) else
                                  v.decode("utf-8", "replace") for v in array.ravel()],
                                 dtype=str).reshape(array.shape)
            elif row is not None and row.module == "ml_dtypes":
                wide = _WIDER["uint" if name.startswith("uint") else row.kind]
                array = array.astype(wide)
                widened.append(Widened(f"{set_dir}/{pb.stem}.npy", name, wide))
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            atomic_write_bytes(pb.with_suffix(".npy"), buffer.getvalue())
    return widened


@dataclass(frozen=True)
class OutputRequest:
    """What run / deploy were asked to do with a run's outputs beyond judging them."""

    outputs: Path | None = None  # --outputs
    force: bool = False
    labels: Path | None = None  # --labels
    save_images: Path | None = None  # --save-images

    @property
    def needs_outputs(self) -> bool:
        """The run's outputs must outlive it (in --outputs, else a temporary directory)."""
        return self.labels is not None or self.save_images is not None


def before_run(bundle: Bundle, request: OutputRequest) -> Labels | None:
    """Every check that can refuse the request, before a device spends time on it."""
    from edgepack import images_out
    from edgepack.labels import load_labels

    labels = load_labels(request.labels, bundle) if request.labels is not None else None
    if request.outputs is not None:
        prepare(request.outputs, request.force)
    if request.save_images is not None:
        images_out.prepare(request.save_images, request.force)
    return labels


def after_run(bundle: Bundle, result: DeployResult, work_dir: Path | None,
              request: OutputRequest, labels: Labels | None) -> DeployResult:
    """The result with its top classes, saved pictures and notes on the kept files."""
    from dataclasses import replace

    from edgepack.images_out import save_images
    from edgepack.labels import top_classes

    notes = list(result.notes)
    if request.outputs is not None:
        widened = write_npy(request.outputs, [s.dir for s in bundle.manifest.test_sets])
        notes += [f"{w.file} holds the {w.dtype} output as {w.saved_as} (every {w.dtype} value "
                  f"is a {w.saved_as} value; numpy cannot name {w.dtype} without ml_dtypes)"
                  for w in widened]
    top = top_classes(bundle, labels, Path(work_dir)) if labels and work_dir else []
    images = []
    if request.save_images is not None and work_dir is not None:
        images = save_images(bundle, Path(work_dir), request.save_images)
        if not images:
            notes.append(f"--save-images: no output of {bundle.name} is a picture (4-D N, C, "
                         "H, W or 3-D, 1 or 3 channels, at least 8x8)")
    return replace(result, notes=notes, top_classes=top, images=images)
