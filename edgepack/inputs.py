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

from edgepack.errors import EdgepackError
from edgepack.fileio import sha256_file
from edgepack.onnx_model import TensorSpec
from edgepack.option_values import NUMPY_DTYPES
from edgepack.tensors import STRING, array_dtype, as_strings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
COLORS = ("rgb", "bgr", "gray", "y")
LAYOUTS = ("nchw", "nhwc")


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

    def __post_init__(self) -> None:
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
        array, preprocess = _load_image(path, spec, image)
        source = InputSource("image", path.name, digest, preprocess=preprocess)
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
) -> tuple[np.ndarray, dict[str, object]]:
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
    if opts.color == "y":
        picture = picture.convert("YCbCr").getchannel(0)
    elif opts.color == "gray":
        picture = picture.convert("L")
    else:
        picture = picture.convert("RGB")
    if resize is not None and picture.size != resize:
        picture = picture.resize(resize, Image.Resampling.BILINEAR)
    pixels = np.asarray(picture)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if opts.color == "bgr":
        pixels = pixels[:, :, ::-1]
    if spec.dtype == "uint8":
        array = pixels.astype(np.uint8)
    else:
        values = pixels.astype(np.float64) * opts.scale
        values = (values - np.asarray(opts.mean)) / np.asarray(opts.std)
        array = values.astype(spec.dtype)
    array = array[None]  # batch of one
    if opts.layout == "nchw":
        array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    preprocess: dict[str, object] = {
        "color": opts.color,
        "layout": opts.layout,
        "resize": list(resize) if resize else None,
        "scale": opts.scale,
        "mean": list(opts.mean),
        "std": list(opts.std),
    }
    return array, preprocess


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

    # Before numpy allocates: a --dim typo must be bad input, not a MemoryError. A random word
    # is at most 8 bytes.
    itemsize = 8 if spec.dtype == STRING or spec.dtype not in NUMPY_DTYPES \
        else np.dtype(spec.dtype).itemsize
    check_tensor_size(f"random input {spec.name!r} (--dim sets its symbolic sizes)", shape,
                      itemsize)
    # One stream per input name keeps a model's other inputs unchanged when one is added.
    name_key = int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, name_key])
    if spec.dtype == STRING:
        array = _random_words(rng, shape)
        source = InputSource("random", seed=seed, preprocess={"distribution": _WORDS})
        return InputValue(spec.name, array, source)
    dtype = np.dtype(spec.dtype) if spec.dtype in NUMPY_DTYPES else None
    if dtype is None:
        raise EdgepackError(
            f"input {spec.name!r} is {spec.dtype}; edgepack cannot make random values of that type"
        )
    if dtype.kind == "f":
        array = rng.standard_normal(shape).astype(dtype)
        distribution = "normal(0, 1)"
    elif dtype.kind == "b":
        array = rng.integers(0, 2, shape).astype(bool)
        distribution = "bernoulli(0.5)"
    else:
        array = rng.integers(0, 10, shape).astype(dtype)
        distribution = "uniform integers in [0, 10)"
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


def collect_input_sets(specs: list[TensorSpec], request: InputRequest) -> list[list[InputValue]]:
    """Turn the request into input sets, each a value for every model input, in model order."""
    by_name = {s.name: s for s in specs}
    sets: list[list[InputValue]] = []
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
    if not files:
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
