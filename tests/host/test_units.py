"""Input preprocessing, comparison metrics and statistics, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from edgepack.bundle import Tolerance
from edgepack.compare import compare_output
from edgepack.errors import EdgepackError
from edgepack.inputs import ImageOptions, load_value, random_value
from edgepack.onnx_model import TensorSpec
from edgepack.option_values import parse_export_input
from edgepack.stats import latency_stats

# ---------------------------------------------------------------------------- images


@pytest.fixture
def rgb_image(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[..., 0] = 200  # red
    pixels[..., 1] = np.arange(6)[None, :] * 10  # green varies along x
    pixels[..., 2] = 50
    path = tmp_path / "img.png"
    Image.fromarray(pixels, "RGB").save(path)
    return path, pixels


def test_image_rgb_nchw_scaled(rgb_image):
    path, pixels = rgb_image
    value = load_value(path, TensorSpec("x", "float32", [1, 3, 4, 6]), ImageOptions())
    assert value.array.shape == (1, 3, 4, 6) and value.array.dtype == np.float32
    np.testing.assert_allclose(value.array[0, 0], 200 / 255, rtol=1e-6)
    np.testing.assert_allclose(value.array[0, 1, 0], pixels[0, :, 1] / 255, rtol=1e-6)


def test_image_bgr_nhwc_mean_std(rgb_image):
    path, _ = rgb_image
    opts = ImageOptions(color="bgr", layout="nhwc", scale=1.0, mean=(10, 20, 30), std=(2, 4, 5))
    value = load_value(path, TensorSpec("x", "float32", [1, 4, 6, 3]), opts)
    assert value.array.shape == (1, 4, 6, 3)
    # channel 0 is now blue: (50 - 10) / 2
    np.testing.assert_allclose(value.array[0, :, :, 0], 20.0)
    np.testing.assert_allclose(value.array[0, :, :, 2], (200 - 30) / 5)


def test_image_y_channel_matches_ycbcr(rgb_image):
    path, _ = rgb_image
    value = load_value(path, TensorSpec("x", "float32", [1, 1, 4, 6]), ImageOptions(color="y"))
    expected = np.asarray(Image.open(path).convert("YCbCr"))[..., 0] / 255.0
    np.testing.assert_allclose(value.array[0, 0], expected, rtol=1e-6)


def test_image_resize_and_uint8(rgb_image):
    path, _ = rgb_image
    opts = ImageOptions(resize=(3, 2), layout="nhwc")
    value = load_value(path, TensorSpec("x", "uint8", [1, "h", "w", 3]), opts)
    assert value.array.shape == (1, 2, 3, 3) and value.array.dtype == np.uint8
    assert value.source.preprocess["resize"] == [3, 2]


def test_image_options_are_checked():
    with pytest.raises(EdgepackError, match="--mean takes 1 or 3 values"):
        ImageOptions(mean=(1, 2))
    with pytest.raises(EdgepackError, match="--color"):
        ImageOptions(color="cmyk")


# ---------------------------------------------------------------------------- random inputs


def test_random_inputs_are_seeded_and_typed():
    spec = TensorSpec("x", "float32", ["batch", 4])
    a = random_value(spec, 1, {"batch": 3}).array
    b = random_value(spec, 1, {"batch": 3}).array
    c = random_value(spec, 2, {"batch": 3}).array
    assert a.shape == (3, 4) and np.array_equal(a, b) and not np.array_equal(a, c)
    ints = random_value(TensorSpec("i", "int64", [5]), 0, {}).array
    assert ints.dtype == np.int64 and ints.min() >= 0 and ints.max() < 10
    assert random_value(TensorSpec("m", "bool", [7]), 0, {}).array.dtype == np.bool_


def test_export_input_parsing():
    spec = parse_export_input("input:1x3x32x32:float16")
    assert spec.shape == (1, 3, 32, 32) and spec.dtype == "float16"
    assert parse_export_input("x:8").dtype == "float32"


# ---------------------------------------------------------------------------- comparison

TOL = Tolerance(rtol=1e-3, atol=1e-4)


def test_identical_outputs():
    x = np.linspace(-1, 1, 50, dtype=np.float32).reshape(5, 10)
    v = compare_output("y", x, x.copy(), TOL)
    assert v.passed and v.metrics.max_abs_error == 0 and math.isinf(v.metrics.snr_db)
    assert v.metrics.cosine_similarity == pytest.approx(1.0)
    assert v.metrics.top1_agreement == 1.0 and v.metrics.top5_agreement == 1.0


def test_metrics_by_hand():
    e = np.array([1.0, 2.0, 0.0, -4.0], np.float32)
    a = np.array([1.1, 2.0, 0.05, -4.0], np.float32)
    v = compare_output("y", e, a, Tolerance(rtol=0.0, atol=0.2))
    m = v.metrics
    assert v.passed
    assert m.max_abs_error == pytest.approx(0.1, rel=1e-5)
    assert m.max_rel_error == pytest.approx(0.1, rel=1e-5)  # zeros excluded from relative
    assert m.mean_abs_error == pytest.approx(0.15 / 4, rel=1e-5)
    signal, noise = 1 + 4 + 16, 0.1**2 + 0.05**2
    assert m.snr_db == pytest.approx(10 * math.log10(signal / noise), rel=1e-4)
    cos = float(np.dot(e, a) / (np.linalg.norm(e) * np.linalg.norm(a)))
    assert m.cosine_similarity == pytest.approx(cos, rel=1e-6)


def test_tolerance_boundary_and_failure_reason():
    e = np.array([[1.0, 2.0, 3.0]], np.float32)
    inside = compare_output("y", e, e + (1e-4 + 1e-3 * np.abs(e)) * 0.9, TOL)
    assert inside.passed
    outside = compare_output("y", e, e + np.array([[0, 0, 0.5]], np.float32), TOL)
    assert not outside.passed and outside.metrics.mismatched == 1
    assert "1 of 3 elements" in outside.reason and "[0, 2]" in outside.reason


def test_shape_dtype_nan_and_missing():
    e = np.zeros((2, 3), np.float32)
    assert "shape differs" in compare_output("y", e, np.zeros((3, 2), np.float32), TOL).reason
    assert "dtype differs" in compare_output("y", e, np.zeros((2, 3), np.float64), TOL).reason
    assert compare_output("y", e, None, TOL).reason == "output missing"
    n = e.copy()
    n[0, 0] = np.nan
    assert compare_output("y", n, n.copy(), TOL).passed  # NaN where expected has NaN
    assert not compare_output("y", e, n, TOL).passed


def test_integers_must_match_exactly():
    e = np.array([1, 2, 3], np.int64)
    assert compare_output("label", e, e.copy(), Tolerance(0, 0)).passed
    assert not compare_output("label", e, np.array([1, 2, 4]), Tolerance(0, 0)).passed


def test_top_k_agreement():
    e = np.array([[0.1, 0.9, 0.3, 0.2, 0.5, 0.0, 0.4]], np.float32)
    a = e.copy()
    a[0, 4], a[0, 1] = 0.95, 0.5  # top-1 changes; the top-5 set stays the same
    m = compare_output("y", e, a, TOL).metrics
    assert m.top1_agreement == 0.0 and m.top5_agreement == 1.0


# ---------------------------------------------------------------------------- statistics


def test_latency_stats():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.count == 5 and s.median_ms == 3.0 and s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.mean_ms == pytest.approx(22.0)
    assert s.p99_ms == pytest.approx(np.percentile([1, 2, 3, 4, 100], 99))
    assert s.unstable
    assert not latency_stats([10.0, 10.1, 9.9, 10.0]).unstable


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_latency_percentiles_match_numpy(n):
    rng = np.random.default_rng(n)
    samples = list(rng.lognormal(1.0, 0.5, n))
    s = latency_stats(samples)
    p50, p90, p95, p99 = np.percentile(samples, [50, 90, 95, 99])
    assert (s.median_ms, s.p90_ms, s.p95_ms, s.p99_ms) == pytest.approx(
        (np.median(samples), p90, p95, p99), rel=1e-12)
    assert p50 == pytest.approx(s.median_ms, rel=1e-12)


# ---------------------------------------------------------------------------- TensorProto files


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int8", "uint8", "int16",
                                   "uint16", "int32", "uint32", "int64", "uint64", "bool"])
@pytest.mark.parametrize("shape", [(), (1,), (2, 3), (1, 3, 4, 5)])
def test_fast_reader_agrees_with_onnx(dtype, shape, tmp_path):
    from onnx import numpy_helper

    from edgepack.tensors import decode_raw_tensor, read_tensor, write_tensor

    rng = np.random.default_rng(len(shape))
    array = (rng.standard_normal(shape) * 50).astype(dtype)
    path = tmp_path / "t.pb"
    write_tensor(path, "x ü", array)
    fast = decode_raw_tensor(path.read_bytes())
    assert fast is not None
    reference = numpy_helper.to_array(numpy_helper.from_array(array, "x ü"))
    assert fast[0] == "x ü" and fast[1].dtype == reference.dtype
    np.testing.assert_array_equal(fast[1], reference)
    assert read_tensor(path)[1].shape == shape


def test_other_encodings_go_to_onnx(tmp_path):
    from onnx import TensorProto, helper

    from edgepack.tensors import decode_raw_tensor, read_tensor

    typed = helper.make_tensor("t", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0])  # float_data
    assert decode_raw_tensor(typed.SerializeToString()) is None
    path = tmp_path / "typed.pb"
    path.write_bytes(typed.SerializeToString())
    name, array = read_tensor(path)
    assert name == "t" and array.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    strings = helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])
    assert decode_raw_tensor(strings.SerializeToString()) is None


def test_truncated_and_garbage_bytes_are_refused(tmp_path):
    from edgepack.tensors import decode_raw_tensor, read_tensor, tensor_bytes

    good = tensor_bytes("x", np.arange(12, dtype=np.float32).reshape(3, 4))
    for cut in range(len(good)):
        assert decode_raw_tensor(good[:cut]) is None or cut == len(good)
    rng = np.random.default_rng(7)
    for _ in range(2000):
        decode_raw_tensor(rng.bytes(int(rng.integers(0, 64))))  # never raises
    path = tmp_path / "cut.pb"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(EdgepackError):
        read_tensor(path)


# ---------------------------------------------------------------------------- records from JSON


def test_from_jsonable_reads_what_to_jsonable_wrote_and_tolerates_newer_records():
    import json
    import math

    from edgepack.devices.base import DeviceInfo
    from edgepack.serialize import from_jsonable, to_jsonable
    from edgepack.stats import LatencyStats

    info = DeviceInfo("s", "linux", "device", abis=["aarch64"], glibc="2.31")
    doc = json.loads(json.dumps(to_jsonable(info)))
    assert from_jsonable(DeviceInfo, doc) == info
    # A newer edgepack's extra key is ignored; a key an older one did not write is defaulted.
    newer = {**doc, "npu": "yes"}
    del newer["glibc"]
    assert from_jsonable(DeviceInfo, newer) == DeviceInfo("s", "linux", "device",
                                                          abis=["aarch64"])
    stats = from_jsonable(LatencyStats, to_jsonable(LatencyStats(0, *[math.nan] * 9)))
    assert stats.count == 0 and math.isnan(stats.median_ms)
    assert from_jsonable(float | None, "inf") == math.inf
    assert from_jsonable(tuple[int, ...], [1, 2]) == (1, 2)
    for tp, bad in ((int, "3"), (list[int], {"a": 1}), (DeviceInfo, [1]), (bool, 1)):
        with pytest.raises(TypeError):
            from_jsonable(tp, bad)
