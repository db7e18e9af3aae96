"""Loading an ONNX model from anywhere and describing its inputs and outputs.

Every command that takes a model goes through `load_model`, so a missing, truncated or non-ONNX
file, or a model whose inputs or outputs are not tensors, gets the same one-line explanation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.bundle.schema import Dim, TensorSpec  # noqa: F401 - where callers find it
from edgepack.errors import EdgepackError, short
from edgepack.tensors import dtype_name

if TYPE_CHECKING:
    import onnx



def load_model(path: Path, *, load_weights: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX model; its external data (if any) is read from beside it.

    With `load_weights=False` the external data files are checked (present, long enough, inside
    the model's directory) but not read: the graph of a model of any size, in little memory."""
    import onnx

    from edgepack.bundle.weights import check_external_data

    path = Path(path)
    if not path.exists():
        raise EdgepackError(f"{path}: no such file")
    if path.is_dir():
        raise EdgepackError(f"{path}: is a directory, expected an ONNX model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise EdgepackError(f"{path}: not an ONNX model, or truncated ({short(exc)})") from None
    if model.ir_version <= 0 or not model.graph.output:
        # Protobuf parses many non-ONNX byte strings into an almost empty message.
        raise EdgepackError(f"{path}: not an ONNX model, or truncated (it has no graph outputs)")
    # Before the checker, whose complaints about data files are less precise.
    check_external_data(model, path)
    try:
        # The path form checks external data and models over 2 GB too.
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise EdgepackError(f"{path}: the ONNX checker rejects this model: {short(exc)}") from None
    if load_weights:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise EdgepackError(
                f"{path}: its external weights cannot be read ({short(exc)}); keep the data "
                "files named in the model beside it"
            ) from None
    return model


def describe_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The inputs a caller must feed: graph inputs that are not initializers (old IR lists both)."""
    initializers = {t.name for t in model.graph.initializer}
    return [
        _tensor_spec(v, "input")
        for v in model.graph.input
        if v.name not in initializers
    ]


def describe_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_tensor_spec(v, "output") for v in model.graph.output]


def opset_imports(model: onnx.ModelProto) -> dict[str, int]:
    return {(op.domain or "ai.onnx"): int(op.version) for op in model.opset_import}


def _tensor_spec(value: onnx.ValueInfoProto, role: str) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        what = _describe_type(value.type)
        hint = ""
        if what.startswith("sequence of maps"):
            hint = (
                ": this is scikit-learn's ZipMap; convert without it, e.g. "
                "skl2onnx.to_onnx(model, X, options={'zipmap': False}), to get a probability tensor"
            )
        raise EdgepackError(
            f"model {role} {value.name!r} is a {what}, not a tensor; "
            f"edgepack compares tensors{hint}"
        )
    tensor = value.type.tensor_type
    shape: list[Dim] = []
    if tensor.HasField("shape"):
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                shape.append(dim.dim_param)
            else:
                shape.append(None)
    return TensorSpec(value.name, dtype_name(tensor.elem_type), shape)


def _describe_type(tp: onnx.TypeProto) -> str:
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        inner = _describe_type(tp.sequence_type.elem_type)
        return "sequence of " + (inner if inner.endswith("s") else inner + "s")
    if kind == "map_type":
        return "map"
    if kind == "optional_type":
        return "optional " + _describe_type(tp.optional_type.elem_type)
    if kind == "sparse_tensor_type":
        return "sparse tensor"
    if kind == "tensor_type":
        return "tensor"
    return kind or "value of unknown type"
