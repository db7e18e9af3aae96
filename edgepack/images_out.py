"""`--save-images DIR`: outputs that are pictures, written as PNG for the host and the device,
with a difference map; and for a bundle packed from an image with `--color y`, the colour
picture rebuilt as the super-resolution tutorial does.

The pictures and the difference map are the HTML report's (report/images.compare_images, one
implementation), here at full size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError, ExitCode

if TYPE_CHECKING:
    import numpy as np

    from edgepack.bundle import Bundle
    from edgepack.bundle.schema import ImagePreprocess

MIN_SIDE = 8
MAX_ITEMS = 4  # pictures per output along N: a batch of 64 is not 192 files


@dataclass(frozen=True)
class SavedImage:
    """The files of one picture of one output (paths under the --save-images DIR)."""

    set_index: int
    output: str
    item: int  # along N
    shape: list[int]  # the output's
    host: str
    device: str | None  # None when the device's output is missing or of another shape
    diff: str | None
    max_abs_diff: float | None
    # --color y: the output read as Y, merged with the source's Cb and Cr upscaled bicubic
    color_host: str | None = None
    color_device: str | None = None


def pictures(array: np.ndarray) -> list[np.ndarray]:
    """An image-like output -> its pictures (HxW or HxWx3 float64), else [].

    4-D [N, C, H, W] with C 1 or 3 (or [N, H, W, C] when that does not fit), 3-D [C, H, W]
    (or [H, W, C]), H and W at least 8: a [1, 10] score row or a [1, 4] box is not a picture.
    Numbers only (no bool or strings).
    """
    import numpy as np

    if array.dtype.kind not in "fiu" or array.ndim not in (3, 4):
        return []
    batch = array if array.ndim == 4 else array[None]
    _, a, b, c = batch.shape
    if a in (1, 3) and b >= MIN_SIDE and c >= MIN_SIDE:
        items = batch.transpose(0, 2, 3, 1)
    elif c in (1, 3) and a >= MIN_SIDE and b >= MIN_SIDE:
        items = batch
    else:
        return []
    out = []
    for item in items[:MAX_ITEMS]:
        item = item.astype(np.float64)
        out.append(item[..., 0] if item.shape[2] == 1 else item)
    return out


def prepare(directory: Path, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise EdgepackError(f"--save-images {directory}: exists and is not a directory",
                            ExitCode.BAD_INPUT)
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise EdgepackError(f"--save-images {directory}: the directory is not empty; pass "
                            "--force to write into it", ExitCode.BAD_INPUT)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgepackError(f"--save-images {directory}: {exc.strerror or exc}",
                            ExitCode.BAD_INPUT) from None


def save_images(bundle: Bundle, outputs_root: Path, directory: Path) -> list[SavedImage]:
    """Every picture of every image-like output of every set, host (expected) and device (the
    run's outputs under outputs_root), into directory/test_data_set_<k>/."""
    from edgepack.compare import read_outputs
    from edgepack.fileio import atomic_write_bytes
    from edgepack.report.images import compare_images

    saved: list[SavedImage] = []
    for test_set in bundle.manifest.test_sets:
        expected = bundle.expected_outputs(test_set.index)
        actual = read_outputs(outputs_root / test_set.dir, list(expected))
        y_inputs = [t.preprocess for t in test_set.inputs
                    if t.preprocess is not None and t.preprocess.color == "y"
                    and t.preprocess.chroma_file is not None]
        chroma = _chroma(bundle, y_inputs[0]) if len(y_inputs) == 1 else None
        for name, host_array in expected.items():
            host_pics = pictures(host_array)
            if not host_pics:
                continue
            dev_array = actual.get(name)
            dev_pics = (pictures(dev_array) if dev_array is not None
                        and dev_array.shape == host_array.shape else [])
            for n, host_pic in enumerate(host_pics):
                stem = f"{test_set.dir}/{_safe(name)}" + (f"_{n}" if len(host_pics) > 1 else "")
                dev_pic = dev_pics[n] if dev_pics else None
                e_png, a_png, d_png, max_diff, _ = compare_images(
                    host_pic, host_pic if dev_pic is None else dev_pic, max_side=None)
                files = {"host": e_png}
                if dev_pic is not None:
                    files.update(device=a_png, diff=d_png)
                if chroma is not None and host_pic.ndim == 2:
                    pre, cbcr = chroma
                    files["color_host"] = _merge(host_pic, pre, cbcr)
                    if dev_pic is not None:
                        files["color_device"] = _merge(dev_pic, pre, cbcr)
                for kind, data in files.items():
                    path = directory / f"{stem}_{kind}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(path, data)
                rel = {kind: str(directory / f"{stem}_{kind}.png") for kind in files}
                saved.append(SavedImage(
                    test_set.index, name, n, list(host_array.shape), rel["host"],
                    rel.get("device"), rel.get("diff"),
                    max_diff if dev_pic is not None else None,
                    rel.get("color_host"), rel.get("color_device")))
    return saved


def _chroma(bundle: Bundle, pre: ImagePreprocess) -> tuple[ImagePreprocess, np.ndarray] | None:
    import numpy as np

    assert pre.chroma_file is not None
    try:
        cbcr = np.load(bundle.path / pre.chroma_file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgepackError(f"{bundle.path / pre.chroma_file}: unreadable ({exc})") from None
    if cbcr.ndim != 3 or cbcr.shape[2] != 2 or cbcr.dtype != np.uint8:
        raise EdgepackError(f"{bundle.path / pre.chroma_file}: not an H x W x 2 uint8 array")
    return pre, cbcr


def _merge(y: np.ndarray, pre: ImagePreprocess, cbcr: np.ndarray) -> bytes:
    """The super-resolution tutorial's picture: the output read back as Y pixels (pack's scale,
    mean and std undone: the tutorial's * 255), merged with the source's Cb and Cr upscaled
    bicubic to its size, converted to RGB."""
    import numpy as np
    from PIL import Image

    from edgepack.report.images import png_bytes

    pixels = (y * pre.std[0] + pre.mean[0]) / pre.scale
    y_img = Image.fromarray(np.uint8(np.clip(np.nan_to_num(pixels), 0, 255)), mode="L")
    cb = Image.fromarray(cbcr[:, :, 0], mode="L").resize(y_img.size, Image.Resampling.BICUBIC)
    cr = Image.fromarray(cbcr[:, :, 1], mode="L").resize(y_img.size, Image.Resampling.BICUBIC)
    rgb = Image.merge("YCbCr", [y_img, cb, cr]).convert("RGB")
    return png_bytes(np.asarray(rgb) / 255.0)


def _safe(name: str) -> str:
    """An output name as a file name: anything but letters, digits, '.', '-' and '_' becomes
    '_' (names like 'model/head:0' are common), never hidden."""
    text = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100].lstrip(".")
    return text or "output"
