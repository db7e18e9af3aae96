"""Where a model's inputs come from: .npy, .pb TensorProto, images, or seeded random values.

Everything here turns user-named sources into named numpy arrays that fit the model's inputs, and
records where each came from so a bundle's manifest can say it. A string input's value is an
object array of str, as edgepack.tensors reads them and onnxruntime takes them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepack import dtypes
from edgepack.bundle.schema import ImagePreprocess
from edgepack.errors import EdgepackError
from edgepack.fileio import sha256_file
from edgepack.onnx_model import TensorSpec
from edgepack.tensors import STRING, array_dtype, as_strings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
COLORS = ("rgb", "bgr", "gray", "y")
LAYOUTS = ("nchw", "nhwc")
RESIZE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")
KEEP_ASPECT = ("squash", "crop", "pad")


@dataclass(frozen=True)
class ImageOptions:
    """How an image becomes a tensor. The defaults match torchvision's ToTensor: RGB, NCHW,
    values scaled to [0, 1]."""

    resize: tuple[int, int] | None = None  # (width, height)
    color: str = "rgb"
    layout: str = "nchw"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    # bilinear: what torchvision's Resize does to a PIL image, and what the tutorials use.
    resize_filter: str = "bilinear"
    keep_aspect: str = "squash"  # squash to the size, crop its centre, or pad it (black)

    def __post_init__(self) -> None:
        if self.resize_filter not in RESIZE_FILTERS:
            raise EdgepackError(f"--resize-filter must be one of {', '.join(RESIZE_FILTERS)}, "
                                f"not {self.resize_filter!r}")
        if self.keep_aspect not in KEEP_ASPECT:
            raise EdgepackError(f"--keep-aspect must be one of {', '.join(KEEP_ASPECT)}, "
                                f"not {self.keep_aspect!r}")
        if self.color not in COLORS:
            raise EdgepackError(f"--color must be one of {', '.join(COLORS)}, not {self.color!r}")
        if self.layout not in LAYOUTS:
            raise EdgepackError(
                f"--layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}"
            )
        channels = 1 if self.color in ("gray", "y") else 3
        for label, values in (("--mean", self.mean), ("--std", self.std)):
            if len(values) not in (1, channels):
                raise EdgepackError(
                    f"{label} takes 1 or {channels} values for --color {self.color}, "
                    f"got {len(values)}"
                )
        if any(s == 0 for s in self.std):
            raise EdgepackError("--std values must not be 0")

    @property
    def channels(self) -> int:
        return 1 if self.color in ("gray", "y") else 3


@dataclass(frozen=True)
class InputSource:
    """Where one input value came from, as the manifest records it."""

    kind: str  # "npy" | "pb" | "image" | "random"
    file: str | None = None  # base name only: bundles must not depend on where files lay
    sha256: str | None = None
    seed: int | None = None
    preprocess: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class InputValue:
    name: str
    array: np.ndarray
    source: InputSource
    image: ImagePreprocess | None = None  # made from an image: every step, for the manifest
    # --color y: the resized source's Cb and Cr (H x W x 2 uint8), which pack keeps on the host
    # so an output Y can be shown in colour as the super-resolution tutorial does
    chroma: np.ndarray | None = None


# ---------------------------------------------------------------------------- reading sources


def load_value(path: Path, spec: TensorSpec, image: ImageOptions) -> InputValue:
    """Read one input's value from a file and check it fits the model's input."""
    path = Path(path)
    if not path.is_file():
        raise EdgepackError(f"{path}: no such file (input {spec.name!r})")
    suffix = path.suffix.lower()
    digest = sha256_file(path)
    if suffix == ".npy":
        array = _load_npy(path)
        source = InputSource("npy", path.name, digest)
    elif suffix == ".pb":
        from edgepack.tensors import read_tensor

        _, array = read_tensor(path)
        source = InputSource("pb", path.name, digest)
    elif suffix in IMAGE_SUFFIXES:
        array, preprocess, record, chroma = _load_image(path, spec, image)
        source = InputSource("image", path.name, digest, preprocess=preprocess)
        check_fits(spec, array, str(path))
        return InputValue(spec.name, array, source, record, chroma)
    else:
        raise EdgepackError(
            f"{path}: unknown input file type {suffix or '(none)'}; use .npy, .pb or an image "
            "(.png, .jpg)"
        )
    check_fits(spec, array, str(path))
    return InputValue(spec.name, array, source)


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            # Loading an object array runs pickle, which executes whatever the file says.
            raise EdgepackError(
                f"{path}: holds a pickled object array, which edgepack does not load; save "
                "strings as a numpy str array (np.array(values, dtype=str))"
            ) from None
        raise EdgepackError(f"{path}: not a readable .npy array ({exc})") from None
    except Exception as exc:
        raise EdgepackError(f"{path}: not a readable .npy array ({exc})") from None
    if array.dtype.kind in "US":
        # numpy's fixed-width strings become the object array of str that onnxruntime takes.
        array = as_strings(array)
    return array


def check_fits(spec: TensorSpec, array: np.ndarray, origin: str) -> None:
    if array_dtype(array) != spec.dtype:
        raise EdgepackError(
            f"{origin}: input {spec.name!r} wants {spec.dtype}, the file holds "
            f"{array_dtype(array)}"
        )
    if not spec.fits(tuple(array.shape)):
        raise EdgepackError(
            f"{origin}: input {spec.name!r} wants shape {spec.shape_text()}, the file holds "
            f"{list(array.shape)}"
        )


def _load_image(
    path: Path, spec: TensorSpec, opts: ImageOptions
) -> tuple[np.ndarray, dict[str, object], ImagePreprocess, np.ndarray | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            picture = img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EdgepackError(f"{path}: cannot read this image ({exc})") from None
    if not spec.dtype.startswith("float") and spec.dtype != "uint8":
        raise EdgepackError(
            f"{path}: input {spec.name!r} is {spec.dtype}; images feed float or uint8 inputs"
        )
    if len(spec.shape) != 4:
        raise EdgepackError(
            f"{path}: input {spec.name!r} has shape {spec.shape_text()}; an image feeds a 4-D "
            "input (N, C, H, W) or (N, H, W, C)"
        )
    resize = opts.resize
    c_axis, h_axis, w_axis = (1, 2, 3) if opts.layout == "nchw" else (3, 1, 2)
    want_c = spec.shape[c_axis]
    if isinstance(want_c, int) and want_c != opts.channels:
        raise EdgepackError(
            f"{path}: input {spec.name!r} wants {want_c} channel(s) in {opts.layout.upper()}; "
            f"--color {opts.color} gives {opts.channels} (try --color "
            f"{'gray or y' if want_c == 1 else 'rgb'}, or --layout)"
        )
    want_h, want_w = spec.shape[h_axis], spec.shape[w_axis]
    if resize is None and isinstance(want_h, int) and isinstance(want_w, int):
        if picture.size != (want_w, want_h):
            # The model fixes its spatial size; the manifest records the resize we chose.
            resize = (want_w, want_h)
    steps = [f"read {path.name}: {picture.size[0]}x{picture.size[1]}, PIL mode {picture.mode}"]
    image_size = picture.size
    # The tutorials resize the RGB picture and then take Y (super_resolution: Resize, then
    # convert("YCbCr").split()); resizing Y alone gives other values at every edge. So every
    # colour is resized as RGB and converted after, and Y's Cb and Cr match the resized picture.
    if picture.mode != "RGB":
        steps.append(f"convert PIL mode {picture.mode} to RGB")
        picture = picture.convert("RGB")
    aspect_changed = False
    if resize is not None and picture.size != resize:
        picture, step, aspect_changed = _resize(picture, resize, opts)
        steps.append(step)
    chroma = None
    if opts.color == "y":
        ycbcr = np.asarray(picture.convert("YCbCr"))
        pixels = ycbcr[:, :, :1]
        chroma = np.ascontiguousarray(ycbcr[:, :, 1:])
        steps.append("convert RGB to YCbCr (PIL, ITU-R BT.601) and keep Y")
    elif opts.color == "gray":
        pixels = np.asarray(picture.convert("L"))[:, :, None]
        steps.append("convert RGB to gray (PIL L: 0.299 R + 0.587 G + 0.114 B)")
    else:
        pixels = np.asarray(picture)
        if opts.color == "bgr":
            pixels = pixels[:, :, ::-1]
            steps.append("reorder channels RGB to BGR")
    if spec.dtype == "uint8":
        array = pixels.astype(np.uint8)
        steps.append("keep 0..255 as uint8 (scale, mean and std do not apply)")
    else:
        values = pixels.astype(np.float64) * opts.scale
        values = (values - np.asarray(opts.mean)) / np.asarray(opts.std)
        array = values.astype(spec.dtype)
        steps.append(f"multiply by scale {opts.scale:.6g}")
        steps.append(f"subtract mean {_floats(opts.mean)}, divide by std {_floats(opts.std)}")
    array = array[None]  # batch of one
    if opts.layout == "nchw":
        array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    steps.append(f"layout {opts.layout.upper()} {list(array.shape)}, {spec.dtype}")
    preprocess: dict[str, object] = {
        "color": opts.color,
        "layout": opts.layout,
        "resize": list(resize) if resize else None,
        "scale": opts.scale,
        "mean": list(opts.mean),
        "std": list(opts.std),
    }
    record = ImagePreprocess(
        image_size=list(image_size), size=list(picture.size),
        resize_filter=opts.resize_filter if resize is not None and image_size != resize
        else "none",
        keep_aspect=opts.keep_aspect, aspect_changed=aspect_changed, color=opts.color,
        scale=opts.scale if spec.dtype != "uint8" else 1.0, mean=list(opts.mean),
        std=list(opts.std), layout=opts.layout, dtype=spec.dtype, steps=steps)
    return array, preprocess, record, chroma


def _floats(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _resize(picture: object, size: tuple[int, int], opts: ImageOptions
            ) -> tuple[object, str, bool]:
    """The picture at `size` (W, H) as --keep-aspect says, the step in words, and whether the
    width:height ratio changed (squash only)."""
    from PIL import Image

    assert isinstance(picture, Image.Image)
    resample = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                "bicubic": Image.Resampling.BICUBIC,
                "lanczos": Image.Resampling.LANCZOS}[opts.resize_filter]
    (w0, h0), (w, h) = picture.size, size
    was = f"{w0}x{h0}"
    if opts.keep_aspect == "squash":
        # Ratios within 1% read as the same shape (rounding a side to whole pixels).
        changed = abs((w0 / h0) / (w / h) - 1.0) > 0.01
        step = (f"resize {was} to {w}x{h} with {opts.resize_filter}"
                + (f" (aspect {w0 / h0:.3g} squashed to {w / h:.3g})" if changed else ""))
        return picture.resize(size, resample), step, changed
    factor = (max if opts.keep_aspect == "crop" else min)(w / w0, h / h0)
    sw, sh = max(1, round(w0 * factor)), max(1, round(h0 * factor))
    scaled = picture.resize((sw, sh), resample)
    if opts.keep_aspect == "crop":
        left, top = (sw - w) // 2, (sh - h) // 2
        step = (f"resize {was} to {sw}x{sh} with {opts.resize_filter} (aspect kept), crop "
                f"the centre {w}x{h}")
        return scaled.crop((left, top, left + w, top + h)), step, False
    canvas = Image.new("RGB", size)
    canvas.paste(scaled, ((w - sw) // 2, (h - sh) // 2))
    step = (f"resize {was} to {sw}x{sh} with {opts.resize_filter} (aspect kept), pad to "
            f"{w}x{h} with black, centred")
    return canvas, step, False


def random_value(spec: TensorSpec, seed: int, dims: dict[str, int]) -> InputValue:
    """A seeded random value for one input; symbolic dims take `dims[label]`, else 1."""
    shape: list[int] = []
    for d in spec.shape:
        if isinstance(d, int):
            shape.append(d)
        elif isinstance(d, str) and d in dims:
            shape.append(dims[d])
        else:
            shape.append(1)
    from edgepack.limits import check_tensor_size

    row = dtypes.lookup(spec.dtype)
    # Before numpy allocates: a --dim typo must be bad input, not a MemoryError. A random word
    # is at most 8 bytes.
    itemsize = 8 if row is None or row.kind == "string" else max(1, row.bits // 8)
    check_tensor_size(f"random input {spec.name!r} (--dim sets its symbolic sizes)", shape,
                      itemsize)
    # One stream per input name keeps a model's other inputs unchanged when one is added.
    name_key = int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, name_key])
    if spec.dtype == STRING:
        array = _random_words(rng, shape)
        source = InputSource("random", seed=seed, preprocess={"distribution": _WORDS})
        return InputValue(spec.name, array, source)
    if row is None:
        raise EdgepackError(
            f"input {spec.name!r} is {spec.dtype}; edgepack cannot make random values of that type"
        )
    dtype = row.numpy()
    if row.kind == "float":
        array = rng.standard_normal(shape).astype(dtype)
        distribution = "normal(0, 1)"
    elif row.kind == "bool":
        array = rng.integers(0, 2, shape).astype(bool)
        distribution = "bernoulli(0.5)"
    else:
        # Packed integers are narrow: int4 ends at 7, int2 at 1.
        high = 2 ** (row.bits - 1) if row.packed else 10
        array = rng.integers(0, high, shape).astype(dtype)
        distribution = f"uniform integers in [0, {high})"
    source = InputSource("random", seed=seed, preprocess={"distribution": distribution})
    return InputValue(spec.name, array, source)


_WORDS = "words of 1 to 8 lowercase ASCII letters"


def _random_words(rng: np.random.Generator, shape: list[int]) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    lengths = rng.integers(1, 9, count)
    letters = rng.integers(0, 26, (count, 8))
    words = np.empty(count, dtype=object)
    words[:] = [
        "".join(chr(97 + c) for c in row[:n]) for row, n in zip(letters, lengths, strict=True)
    ]
    return words.reshape(shape)


# ---------------------------------------------------------------------------- input sets


@dataclass(frozen=True)
class InputRequest:
    """What the user asked `pack` to feed: named files, test-data directories, random sets."""

    named: list[tuple[str, Path]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    random_sets: int = 0
    seed: int = 0
    dims: dict[str, int] = field(default_factory=dict)
    image: ImageOptions = field(default_factory=ImageOptions)
    # --inputs-from-bundle and its --map OUT=IN pairs (edgepack.bundle_inputs)
    from_bundle: Path | None = None
    bundle_map: list[tuple[str, str]] = field(default_factory=list)


def collect_input_sets(specs: list[TensorSpec], request: InputRequest) -> list[list[InputValue]]:
    """Turn the request into input sets, each a value for every model input, in model order."""
    by_name = {s.name: s for s in specs}
    sets: list[list[InputValue]] = []
    if request.from_bundle is not None:
        from edgepack.bundle_inputs import sets_from_bundle

        sets.extend(sets_from_bundle(request.from_bundle, specs, request.bundle_map))
    for directory in request.dirs:
        sets.extend(_sets_from_dir(Path(directory), specs))

    if request.named:
        per_name: dict[str, list[Path]] = {}
        for name, path in request.named:
            if name not in by_name:
                raise EdgepackError(
                    f"--input {name}={path}: the model has no input {name!r} "
                    f"(its inputs: {', '.join(by_name) or 'none'})"
                )
            per_name.setdefault(name, []).append(path)
        counts = {len(v) for v in per_name.values()}
        if len(counts) != 1:
            raise EdgepackError(
                "every named input must be given the same number of times (one per input set)"
            )
        n_sets = counts.pop()
        for k in range(n_sets):
            values = []
            for i, spec in enumerate(specs):
                if spec.name in per_name:
                    values.append(load_value(per_name[spec.name][k], spec, request.image))
                else:
                    # Unnamed inputs are filled at random rather than refused: a model with an
                    # image input and a small auxiliary input is common.
                    values.append(random_value(spec, request.seed + k * 1000 + i, request.dims))
            sets.append(values)

    for k in range(request.random_sets):
        sets.append([random_value(s, request.seed + k, request.dims) for s in specs])
    if not sets:
        sets.append([random_value(s, request.seed, request.dims) for s in specs])
    return sets


def _sets_from_dir(directory: Path, specs: list[TensorSpec]) -> list[list[InputValue]]:
    """A directory of input_<i>.pb files (one ONNX test data set), or a model directory holding
    test_data_set_<k>/ subdirectories, as the onnx package ships its test models."""
    if not directory.is_dir():
        raise EdgepackError(f"--inputs-from {directory}: no such directory")
    subsets = sorted(
        (p for p in directory.glob("test_data_set_*") if p.is_dir()),
        key=lambda p: _trailing_int(p.name),
    )
    if subsets:
        return [_one_set(p, specs) for p in subsets]
    return [_one_set(directory, specs)]


def _one_set(directory: Path, specs: list[TensorSpec]) -> list[InputValue]:
    from edgepack.tensors import read_tensor

    files = sorted(directory.glob("input_*.pb"), key=lambda p: _trailing_int(p.stem))
    if not files and specs:
        raise EdgepackError(f"--inputs-from {directory}: no input_<i>.pb files in it")
    by_name = {s.name: s for s in specs}
    found: dict[str, InputValue] = {}
    for position, path in enumerate(files):
        name, array = read_tensor(path)
        if name:
            if name not in by_name:
                raise EdgepackError(
                    f"{path}: carries input name {name!r}, which the model does not have "
                    f"(its inputs: {', '.join(by_name)})"
                )
            spec = by_name[name]
        else:
            if position >= len(specs):
                raise EdgepackError(
                    f"{path}: unnamed input number {position}, but the model has only "
                    f"{len(specs)} input(s)"
                )
            spec = specs[position]
        if spec.name in found:
            raise EdgepackError(f"{directory}: input {spec.name!r} is given twice")
        check_fits(spec, array, str(path))
        source = InputSource("pb", path.name, sha256_file(path))
        found[spec.name] = InputValue(spec.name, array, source)
    missing = [s.name for s in specs if s.name not in found]
    if missing:
        raise EdgepackError(
            f"--inputs-from {directory}: no value for input(s) {', '.join(missing)}"
        )
    return [found[s.name] for s in specs]


def _trailing_int(text: str) -> int:
    m = re.search(r"(\d+)$", text)
    return int(m.group(1)) if m else 0
