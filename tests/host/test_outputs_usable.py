"""Issue 15 part 2, outputs a person can use: run --outputs (.pb and .npy), --labels (top-5 by
name, host beside device), --save-images (PNGs, the super-resolution colour picture), image
preprocessing a person can see and choose, class-score gating of top-k, shapes in tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgepack.bundle.schema import Tolerance
from edgepack.compare import class_count, compare_output
from tests.conftest import EXAMPLES, IMAGES, run_cli

CIFAR = EXAMPLES / "labels" / "cifar10.txt"
MNIST = EXAMPLES / "labels" / "mnist.txt"
F32 = Tolerance(rtol=1e-3, atol=1e-5)


def _pb(path: Path) -> np.ndarray:
    proto = TensorProto()
    proto.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(proto)


def _one_line_exit_2(r) -> None:  # noqa: ANN001
    assert r.code == 2, r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------- --outputs


def test_run_outputs_keeps_pb_and_npy_and_refuses_a_non_empty_directory(bundles, tmp_path):
    out = tmp_path / "out"
    r = run_cli("run", bundles["resnet20"], "--iterations", "1", "--outputs", out)
    assert r.code == 0, r.stderr + r.stdout
    for k in range(2):
        pb = out / f"test_data_set_{k}" / "output_0.pb"
        npy = pb.with_suffix(".npy")
        np.testing.assert_array_equal(np.load(npy, allow_pickle=False), _pb(pb))
        np.testing.assert_allclose(_pb(pb), _pb(bundles["resnet20"] / pb.relative_to(out)),
                                   rtol=1e-5, atol=1e-6)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    r = run_cli("run", bundles["resnet20"], "--iterations", "1", "--outputs", out)
    _one_line_exit_2(r)
    assert f"--outputs {out}: the directory is not empty; pass --force" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    r = run_cli("run", bundles["resnet20"], "--iterations", "1", "--outputs", out, "--force")
    assert r.code == 0, r.stderr


def test_a_bfloat16_output_is_saved_as_float32_and_said(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "cast.onnx"
    onnx.save(model, path)
    bundle = tmp_path / "b"
    r = run_cli("pack", path, "-o", bundle)
    assert r.code == 0, r.stderr
    out = tmp_path / "out"
    r = run_cli("run", bundle, "--engine", "python", "--iterations", "1", "--outputs", out,
                "--json")
    assert r.code == 0, r.stderr + r.stdout
    saved = np.load(out / "test_data_set_0" / "output_0.npy", allow_pickle=False)
    assert saved.dtype == np.float32
    expected = _pb(bundle / "test_data_set_0" / "output_0.pb")
    np.testing.assert_array_equal(saved, expected.astype(np.float32))
    assert any("bfloat16 output as float32" in n for n in r.json()["notes"]), r.json()["notes"]


# ---------------------------------------------------------------------------- class scores


@pytest.mark.parametrize(("name", "shape", "classes"), [
    ("boxes", (1, 4), None),  # a box is four numbers, not four classes
    ("output", (1, 4), None),  # four wide with a name that says nothing: not guessed
    ("logits", (1, 4), 4),  # ... unless the name says scores
    ("bbox_pred", (1, 10), None),  # geometry by name, whatever the width
    ("fc", (2, 10, 1, 1), 10),  # a 1x1-convolution head
    ("fc", (1, 10, 2, 1), None),
    ("fc", (1, 1), None),
    ("fc", (10,), None),
])
def test_which_outputs_are_class_scores(name, shape, classes):
    e = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert class_count(name, e) == classes
    a = e.copy()
    m = compare_output(name, e, a, F32).metrics
    assert (m.top1_agreement is not None) == (classes is not None)
    assert class_count(name, e.astype(np.int64)) is None  # integers are labels already


def test_top1_of_a_1x1_head_sees_a_changed_class():
    e = np.zeros((1, 10, 1, 1), np.float32)
    e[0, 3] = 1.0
    a = e.copy()
    a[0, 3], a[0, 7] = 0.0, 1.0
    m = compare_output("fc", e, a, F32).metrics
    assert m.top1_agreement == 0.0 and m.top5_agreement is not None


# ---------------------------------------------------------------------------- --labels


def test_labels_show_top5_by_name_for_host_and_device(bundles, tmp_path):
    report = tmp_path / "report.json"
    r = run_cli("run", bundles["resnet20"], "--iterations", "1", "--labels", CIFAR,
                "--report", report)
    assert r.code == 0, r.stderr + r.stdout
    names = CIFAR.read_text().split()
    host = _pb(bundles["resnet20"] / "test_data_set_0" / "output_0.pb")[0]
    best = names[int(np.argmax(host))]
    assert "top-5 of linear, input set 0 (10 classes): top-1 agrees" in r.stdout
    assert f"{best} ({int(np.argmax(host))})" in r.stdout

    r = run_cli("run", bundles["resnet20"], "--iterations", "1", "--labels", CIFAR, "--json")
    assert r.code == 0, r.stderr
    for doc in (r.json(), json.loads(report.read_text())):
        tops = doc["top_classes"]
        assert [(t["set_index"], t["output"], t["classes"]) for t in tops] == [
            (0, "linear", 10), (1, "linear", 10)]
        first = tops[0]
        assert [s["label"] for s in first["host"]] == [
            names[i] for i in np.argsort(-host, kind="stable")[:5]]
        assert [s["index"] for s in first["device"]] == [s["index"] for s in first["host"]]
        assert first["host"][0]["score"] == pytest.approx(float(host.max()))

    r = run_cli("run", bundles["mnist"], "--iterations", "1", "--labels", MNIST, "--json")
    assert r.code == 0, r.stderr
    digits = [t["host"][0]["label"] for t in r.json()["top_classes"]]
    assert len(digits) == 2 and all(d in "0123456789" for d in digits)


def test_bad_labels_files_are_one_line_exit_2(bundles, tmp_path):
    short = tmp_path / "nine.txt"
    short.write_text("\n".join(CIFAR.read_text().split()[:9]) + "\n")
    r = run_cli("run", bundles["resnet20"], "--labels", short)
    _one_line_exit_2(r)
    assert "9 name(s) for the 10 classes of output 'linear'" in r.stderr
    _one_line_exit_2(run_cli("run", bundles["resnet20"], "--labels", tmp_path / "none.txt"))
    r = run_cli("run", bundles["super_resolution"], "--labels", CIFAR)
    _one_line_exit_2(r)
    assert "no output of super_resolution is class scores" in r.stderr


# ---------------------------------------------------------------------------- --save-images


def test_save_images_writes_pictures_and_the_tutorials_colour_picture(bundles, tmp_path):
    out = tmp_path / "img"
    r = run_cli("run", bundles["super_resolution"], "--iterations", "1", "--save-images", out,
                "--json")
    assert r.code == 0, r.stderr + r.stdout
    (saved,) = r.json()["images"]
    assert saved["shape"] == [1, 1, 672, 672] and saved["max_abs_diff"] == 0
    for kind in ("host", "device", "diff", "color_host", "color_device"):
        with Image.open(out / saved[kind]) as im:
            assert im.size == (672, 672), kind

    # The super-resolution tutorial, by hand: resize the RGB picture, take YCbCr, run Y, merge
    # the output Y with Cb and Cr upscaled bicubic.
    with Image.open(IMAGES / "scene_320x240.jpg") as src:
        small = src.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    _, cb, cr = small.convert("YCbCr").split()
    y_out = _pb(bundles["super_resolution"] / "test_data_set_0" / "output_0.pb")
    y_img = Image.fromarray(np.uint8((y_out[0] * 255.0).clip(0, 255)[0]), mode="L")
    want = Image.merge("YCbCr", [y_img, cb.resize(y_img.size, Image.Resampling.BICUBIC),
                                 cr.resize(y_img.size, Image.Resampling.BICUBIC)]).convert("RGB")
    with Image.open(out / saved["color_host"]) as got:
        np.testing.assert_array_equal(np.asarray(got.convert("RGB")), np.asarray(want))

    # Not empty, no --force: one line, exit 2; a model without pictures says so.
    _one_line_exit_2(run_cli("run", bundles["super_resolution"], "--save-images", out))
    r = run_cli("run", bundles["resnet20"], "--iterations", "1", "--save-images",
                tmp_path / "none", "--json")
    assert r.code == 0 and r.json()["images"] == []
    assert any("is a picture" in n for n in r.json()["notes"])


# ---------------------------------------------------------------------------- preprocessing


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _input(bundle: Path) -> np.ndarray:
    return _pb(bundle / "test_data_set_0" / "input_0.pb")


def test_y_is_taken_after_resizing_the_rgb_picture(exported, tmp_path):
    bundle = tmp_path / "sr"
    r = run_cli("pack", exported["super_resolution"], "-o", bundle, "--input",
                f"input={IMAGES / 'scene_320x240.jpg'}", "--color", "y")
    assert r.code == 0, r.stderr
    assert "320x240 squashed to 224x224, the aspect ratio changed" in r.stderr
    with Image.open(IMAGES / "scene_320x240.jpg") as src:
        y = src.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR).convert("YCbCr")
    want = np.asarray(y)[:, :, 0].astype(np.float64) / 255.0
    np.testing.assert_allclose(_input(bundle)[0, 0], want.astype(np.float32), rtol=0, atol=0)
    pre = _manifest(bundle)["test_sets"][0]["inputs"][0]["preprocess"]
    assert pre["image_size"] == [320, 240] and pre["size"] == [224, 224]
    assert pre["aspect_changed"] is True and pre["resize_filter"] == "bilinear"
    assert pre["chroma_file"] == "host/test_data_set_0/input_0_cbcr.npy"
    steps = pre["steps"]
    assert steps.index(next(s for s in steps if s.startswith("resize"))) < steps.index(
        next(s for s in steps if "YCbCr" in s))
    shown = run_cli("inspect", bundle)
    assert shown.code == 0
    text = " ".join(shown.stdout.split())
    assert "resize 320x240 to 224x224 with bilinear" in text and "keep Y" in text


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_keep_aspect_and_resize_filter_are_chosen_and_recorded(exported, tmp_path, fit):
    bundle = tmp_path / fit
    r = run_cli("pack", exported["resnet20"], "-o", bundle, "--input",
                f"input={IMAGES / 'scene_320x240.jpg'}", "--keep-aspect", fit,
                "--resize-filter", "nearest")
    assert r.code == 0, r.stderr
    assert "aspect ratio changed" not in r.stderr
    with Image.open(IMAGES / "scene_320x240.jpg") as src:
        rgb = src.convert("RGB")
    if fit == "crop":  # scale to cover 32x32: 43x32, then the centre
        want = rgb.resize((43, 32), Image.Resampling.NEAREST).crop((5, 0, 37, 32))
    else:  # scale to fit: 32x24, black bands of 4 above and below
        want = Image.new("RGB", (32, 32))
        want.paste(rgb.resize((32, 24), Image.Resampling.NEAREST), (0, 4))
    expected = (np.asarray(want).astype(np.float64) / 255.0).transpose(2, 0, 1)
    np.testing.assert_array_equal(_input(bundle)[0], expected.astype(np.float32))
    pre = _manifest(bundle)["test_sets"][0]["inputs"][0]["preprocess"]
    assert (pre["keep_aspect"], pre["resize_filter"], pre["aspect_changed"]) == (
        fit, "nearest", False)
    assert pre["chroma_file"] is None


def test_unknown_filter_or_fit_is_one_line_exit_2(exported, tmp_path):
    for option, value in (("--resize-filter", "area"), ("--keep-aspect", "stretch")):
        r = run_cli("pack", exported["resnet20"], "-o", tmp_path / "b", "--input",
                    f"input={IMAGES / 'cifar_32.png'}", option, value)
        _one_line_exit_2(r)
        assert option in r.stderr


# ---------------------------------------------------------------------------- tables


def test_comparison_tables_show_each_outputs_shape(bundles):
    r = run_cli("run", bundles["super_resolution"], "--iterations", "1")
    assert r.code == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "verdict" in line)
    assert "shape" in header
    assert "1x1x672x672" in r.stdout


@pytest.mark.parametrize("chroma", ["../../outside.npy", "test_data_set_0/input_0.pb"])
def test_a_manifest_chroma_file_must_be_a_host_file_inside_the_bundle(bundles, tmp_path,
                                                                     chroma):
    import shutil

    bundle = tmp_path / "sr"
    shutil.copytree(bundles["super_resolution"], bundle)
    doc = _manifest(bundle)
    doc["test_sets"][0]["inputs"][0]["preprocess"]["chroma_file"] = chroma
    (bundle / "manifest.json").write_text(json.dumps(doc))
    r = run_cli("inspect", bundle, "--no-verify")
    _one_line_exit_2(r)
    assert "chroma_file" in r.stderr
