"""Outputs that are pictures (a super-resolution frame, a mask) shown as pictures: host, device,
and where they differ."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepack.records import RunStatus

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.records import GroupSummary

MAX_SIDE = 512  # pixels in the report; larger outputs are shrunk (the difference map by max)


@dataclass(frozen=True)
class ImageComparison:
    serial: str
    bundle_name: str
    config_key: str
    set_index: int
    output: str
    shape: list[int]
    passed: bool
    max_abs_diff: float
    value_range: tuple[float, float]  # what black and white stand for in both pictures
    expected_png: bytes  # the host's expected output
    actual_png: bytes  # the device's
    diff_png: bytes  # |actual - expected|, black = equal, white = max_abs_diff

    @staticmethod
    def data_uri(png: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def as_image(array: np.ndarray) -> np.ndarray | None:
    """An output that looks like one picture -> HxW or HxWx3 float array; else None.

    A 4-D float tensor with batch 1 and 1 or 3 channels (NCHW, or NHWC), at least 16 pixels on
    each side: the super-resolution tutorial's [1, 1, 672, 672] is one; logits are not.
    """
    if array.ndim != 4 or array.dtype.kind != "f" or array.shape[0] != 1:
        return None
    _, a, b, c = array.shape
    if a in (1, 3) and b >= 16 and c >= 16:
        image = array[0].transpose(1, 2, 0)
    elif c in (1, 3) and a >= 16 and b >= 16:
        image = array[0]
    else:
        return None
    image = image.astype(np.float64)
    return image[..., 0] if image.shape[2] == 1 else image


def compare_images(expected: np.ndarray, actual: np.ndarray, max_side: int | None = MAX_SIDE
                   ) -> tuple[bytes, bytes, bytes, float, tuple[float, float]]:
    """Both pictures on one scale (so a device that is darker looks darker) and the difference.
    Shrunk to max_side pixels (None: full size, as `--save-images` writes them)."""
    e = np.nan_to_num(expected, nan=0.0, posinf=0.0, neginf=0.0)
    a = np.nan_to_num(actual, nan=0.0, posinf=0.0, neginf=0.0)
    lo = float(min(e.min(), a.min()))
    hi = float(max(e.max(), a.max()))
    scale = hi - lo if hi > lo else 1.0
    diff = np.abs(a - e)
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    max_diff = float(diff.max()) if diff.size else 0.0
    factor = 1 if max_side is None else max(1, math.ceil(max(e.shape[0], e.shape[1]) / max_side))
    e_png = _png(_shrink_mean((e - lo) / scale, factor))
    a_png = _png(_shrink_mean((a - lo) / scale, factor))
    d = _shrink_max(diff / max_diff if max_diff > 0 else diff, factor)
    return e_png, a_png, _png(_heat(d)), max_diff, (lo, hi)


def image_comparisons(
    groups: Sequence[GroupSummary],
    bundles: dict[str, Bundle],
    work_dirs: dict[tuple[str, str, str], str],
    limit: int = 12,
) -> list[ImageComparison]:
    """One comparison per device x bundle x image output x test set, from a kept run's outputs.

    `work_dirs` maps (serial, bundle sha256, config key) to the directory a run kept its outputs
    in. Failing groups come first, then one group per device and bundle: configurations of one
    device give near-identical pictures.
    """
    from edgepack.compare import read_outputs

    shown: set[tuple[str, str]] = set()
    result: list[ImageComparison] = []
    for g in sorted(groups, key=lambda g: g.status is not RunStatus.FAIL):
        bundle = bundles.get(g.bundle_sha256)
        work = work_dirs.get((g.serial, g.bundle_sha256, g.config_key))
        if bundle is None or work is None or (g.serial, g.bundle_sha256) in shown:
            continue
        passed = {(c.set_index, c.verdict.name): c.verdict.passed for c in g.checks}
        for test_set in bundle.manifest.test_sets[:2]:
            expected = bundle.expected_outputs(test_set.index)
            images = {n: as_image(arr) for n, arr in expected.items()}
            if not any(img is not None for img in images.values()):
                continue
            actual = read_outputs(Path(work) / test_set.dir, list(expected))
            for name, exp_img in images.items():
                act_img = as_image(actual[name]) if name in actual else None
                if exp_img is None or act_img is None or exp_img.shape != act_img.shape:
                    continue
                e_png, a_png, d_png, max_diff, value_range = compare_images(exp_img, act_img)
                result.append(ImageComparison(
                    g.serial, g.bundle_name, g.config_key, test_set.index, name,
                    list(expected[name].shape), passed.get((test_set.index, name), True),
                    max_diff, value_range, e_png, a_png, d_png))
                shown.add((g.serial, g.bundle_sha256))
                if len(result) >= limit:
                    return result
    return result


def _shrink_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    cut = image[:h, :w]
    return cut.reshape(h // factor, factor, w // factor, factor, *cut.shape[2:]).mean(axis=(1, 3))


def _shrink_max(image: np.ndarray, factor: int) -> np.ndarray:
    # By max, so one wrong pixel survives the shrinking.
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3))


def _heat(unit: np.ndarray) -> np.ndarray:
    """0..1 -> black, red, yellow, white: small differences stay visible next to large ones."""
    u = np.clip(unit, 0.0, 1.0)
    r = np.clip(u * 3, 0, 1)
    g = np.clip(u * 3 - 1, 0, 1)
    b = np.clip(u * 3 - 2, 0, 1)
    return np.stack([r, g, b], axis=-1)


def png_bytes(unit: np.ndarray) -> bytes:
    """0..1 (HxW or HxWx3) -> PNG."""
    return _png(unit)


def _png(unit: np.ndarray) -> bytes:
    from PIL import Image

    pixels = (np.clip(unit, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(pixels)  # uint8 HxW: L, HxWx3: RGB
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
