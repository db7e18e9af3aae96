"""Every kind of bad input: one clear line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import EXAMPLES, IMAGES, run_cli, run_cli_subprocess


def assert_clean_error(result, *needles: str, code: int = 2) -> None:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgepack: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_model_file(tmp_path):
    assert_clean_error(run_cli("pack", tmp_path / "nope.onnx", "-o", tmp_path / "b"),
                       "nope.onnx", "no such file")


def test_not_onnx(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is a text file, not a model\n" * 20)
    assert_clean_error(run_cli("pack", junk, "-o", tmp_path / "b"), "junk.onnx", "not an ONNX")


def test_truncated_onnx(exported, tmp_path):
    data = exported["resnet20"].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    assert_clean_error(run_cli("pack", cut, "-o", tmp_path / "b"), "cut.onnx")
    assert not (tmp_path / "b").exists()


def test_unknown_input_name(exported, tmp_path):
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((1, 3, 32, 32), np.float32))
    assert_clean_error(run_cli("pack", exported["resnet20"], "-o", tmp_path / "b",
                               "--input", f"image={arr}"),
                       "no input 'image'", "input")


def test_input_of_wrong_shape(exported, tmp_path):
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((1, 3, 30, 30), np.float32))
    assert_clean_error(run_cli("pack", exported["resnet20"], "-o", tmp_path / "b",
                               "--input", f"input={arr}"),
                       "wants shape", "[1, 3, 30, 30]")


def test_input_of_wrong_dtype(exported, tmp_path):
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((1, 3, 32, 32), np.float64))
    assert_clean_error(run_cli("pack", exported["resnet20"], "-o", tmp_path / "b",
                               "--input", f"input={arr}"),
                       "wants float32", "float64")


def test_input_pb_of_wrong_dtype(exported, tmp_path):
    from edgepack.tensors import write_tensor

    pb = tmp_path / "input_0.pb"
    write_tensor(pb, "input", np.zeros((1, 3, 32, 32), np.int64))
    assert_clean_error(run_cli("pack", exported["resnet20"], "-o", tmp_path / "b",
                               "--inputs-from", tmp_path), "wants float32", "int64")


def test_unreadable_image(exported, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes((IMAGES / "cifar_32.png").read_bytes()[:40])
    assert_clean_error(run_cli("pack", exported["resnet20"], "-o", tmp_path / "b",
                               "--input", f"input={bad}"), "broken.png", "cannot read this image")


def test_image_with_wrong_channels(exported, tmp_path):
    assert_clean_error(run_cli("pack", exported["resnet20"], "-o", tmp_path / "b",
                               "--input", f"input={IMAGES / 'cifar_32.png'}", "--color", "gray"),
                       "3 channel", "--color gray")


def test_zipmap_output_is_explained(exported, tmp_path):
    assert_clean_error(run_cli("pack", exported["iris_zipmap"], "-o", tmp_path / "b"),
                       "sequence of maps", "ZipMap", "zipmap")


def test_existing_output_dir_is_refused(exported, tmp_path):
    (tmp_path / "b").mkdir()
    assert_clean_error(run_cli("pack", exported["iris_forest"], "-o", tmp_path / "b"),
                       "already exists", "--force")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    assert_clean_error(run_cli("export", EXAMPLES / "mnist.py:make_model",
                               "--input", "input:1x1x28x28", "-o", out), "already exists")
    assert out.read_bytes() == b"keep me"


def test_weights_that_do_not_match_the_module(tmp_path):
    import torch

    from tests.conftest import EXAMPLES as ex

    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, wrong)
    assert_clean_error(run_cli("export", ex / "mnist.py:make_model", "--input", "input:1x1x28x28",
                               "--weights", wrong, "-o", tmp_path / "m.onnx"),
                       "wrong.pt", "does not match the module")
    assert not (tmp_path / "m.onnx").exists()


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_clean_error(run_cli("export", EXAMPLES / "mnist.py:make_model", "--input",
                               "input:1x1x28x28", "--weights", junk, "-o", tmp_path / "m.onnx"),
                       "junk.pt", "state dict")


def test_missing_weights_and_missing_model_file(tmp_path):
    assert_clean_error(run_cli("export", EXAMPLES / "mnist.py:make_model", "--input",
                               "input:1x1x28x28", "--weights", tmp_path / "none.pt",
                               "-o", tmp_path / "m.onnx"), "none.pt")
    assert_clean_error(run_cli("export", tmp_path / "none.py:make_model", "--input",
                               "input:1x1x28x28", "-o", tmp_path / "m.onnx"), "none.py")


@pytest.mark.parametrize("spec,needle", [
    ("input", "NAME:SHAPE"),
    ("input:1xAx3", "must be sizes"),
    ("input:1x3:complex7", "unknown dtype"),
])
def test_bad_export_input_specs(spec, needle, tmp_path):
    assert_clean_error(run_cli("export", EXAMPLES / "mnist.py:make_model", "--input", spec,
                               "-o", tmp_path / "m.onnx"), needle)


def test_bad_model_reference(tmp_path):
    assert_clean_error(run_cli("export", "no_colon_here", "--input", "x:1",
                               "-o", tmp_path / "m.onnx"), "file.py:make_model")
    assert_clean_error(run_cli("export", EXAMPLES / "mnist.py:nothing", "--input", "x:1",
                               "-o", tmp_path / "m.onnx"), "no callable 'nothing'")


def test_bundle_that_is_not_a_bundle(tmp_path):
    assert_clean_error(run_cli("inspect", tmp_path), "not a bundle")
    assert_clean_error(run_cli("run", tmp_path / "missing"), "no such bundle")


def test_usage_errors_exit_2(tmp_path):
    r = run_cli("pack")
    assert r.code == 2
    r = run_cli("run", tmp_path, "--ep", "gpu")
    assert r.code == 2


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli_subprocess("--debug", "pack", tmp_path / "nope.onnx", "-o", tmp_path / "b")
    assert r.code == 2 and "Traceback" in r.stderr and "no such file" in r.stderr
    r = run_cli_subprocess("pack", tmp_path / "nope.onnx", "-o", tmp_path / "b")
    assert r.code == 2 and "Traceback" not in r.stderr
