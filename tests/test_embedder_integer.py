"""The integer embedder (all-minilm-l6-v2-int8): ONNX Runtime's own dynamic quantisation of
the same weights gives the same vectors; they stay close to the float model's; a text's
vector does not depend on the texts embedded beside it; a model it cannot rewrite is refused."""

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from outcrop.embeddings.integer import integer_matmuls
from outcrop.embeddings.local import LOCAL_EMBEDDERS, LocalEmbedder
from outcrop.errors import ModelFileError
from outcrop.rag.kb import DEFAULT_EMBEDDER

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of tuberculosis.",
    "A short one.",
    "Mean-pooled MiniLM vectors of a longer passage, with several clauses, numbers like 42 "
    "and 3.14, and a heading path\nIntroduction > Methods.",
    "0-dimensional biomaterials show inductive properties.",
]


def _source() -> Path:
    spec = LOCAL_EMBEDDERS["all-minilm-l6-v2-int8"]
    folder = importlib.util.find_spec(spec.package).submodule_search_locations  # type: ignore[union-attr]
    return Path(next(iter(folder))) / spec.file


def test_the_integer_embedder_is_the_default_for_new_knowledge_bases() -> None:
    assert DEFAULT_EMBEDDER == "local:all-minilm-l6-v2-int8"
    assert LocalEmbedder("all-minilm-l6-v2-int8").id == DEFAULT_EMBEDDER


def test_every_weight_product_is_made_integer() -> None:
    rewritten, count = integer_matmuls(_source().read_bytes(), source="model.onnx")
    model = onnx.load_from_string(rewritten)
    ops = [n.op_type for n in model.graph.node]
    # 6 layers × (query, key, value, output, two feed-forward) = 36; attention's 12 stay.
    assert count == ops.count("MatMulInteger") == 36
    assert ops.count("MatMul") == 12
    assert ops.count("DynamicQuantizeLinear") == 24  # one per distinct activation

    # The 36 weight matrices are no longer turned back into floats; only the embedding
    # tables' Casts (looked up, not multiplied) are left.
    def int8_casts(m: onnx.ModelProto) -> list[str]:
        int8 = {i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8}
        return [n.input[0] for n in m.graph.node if n.op_type == "Cast" and n.input[0] in int8]

    before = int8_casts(onnx.load(str(_source())))
    after = int8_casts(model)
    assert len(before) - len(after) == 36
    assert all("embeddings" in name for name in after)


def test_vectors_equal_onnx_runtimes_own_dynamic_quantisation(tmp_path: Path) -> None:
    """The reference: fold the stored weights to float32, quantise with ONNX Runtime's tool
    (per-column int8 weights), and embed with that file."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(_source()))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    folded, gone = [], []
    for node in graph.node:
        if node.op_type != "Mul" or node.input[0] not in producer:
            continue
        cast = producer[node.input[0]]
        if cast.op_type == "Cast" and cast.input[0] in inits and node.input[1] in inits:
            q = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]])
            folded.append(numpy_helper.from_array(q * scale, node.output[0]))
            gone += [node, cast]
    for node in gone:
        graph.node.remove(node)
    graph.initializer.extend(folded)
    onnx.save(model, str(tmp_path / "float.onnx"))
    quantize_dynamic(
        str(tmp_path / "float.onnx"),
        str(tmp_path / "dynamic.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
    embedder = LocalEmbedder("all-minilm-l6-v2-int8")
    ours = embedder.embed(TEXTS)
    session, encoder, counter = embedder._load()
    reference = onnxruntime.InferenceSession(
        str(tmp_path / "dynamic.onnx"), providers=["CPUExecutionProvider"]
    )
    LocalEmbedder._sessions[embedder.spec.name] = (reference, encoder, counter)
    try:
        theirs = embedder.embed(TEXTS)
    finally:
        LocalEmbedder._sessions[embedder.spec.name] = (session, encoder, counter)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_vectors_are_close_to_the_float_models_but_not_the_same() -> None:
    integer = LocalEmbedder("all-minilm-l6-v2-int8").embed(TEXTS)
    float_ = LocalEmbedder("all-minilm-l6-v2").embed(TEXTS)
    cosines = (integer * float_).sum(axis=1)
    assert cosines.min() > 0.98
    assert not np.allclose(integer, float_, atol=1e-4)  # another embedder: never mixed
    assert np.allclose(np.linalg.norm(integer, axis=1), 1.0, atol=1e-5)


def test_a_texts_vector_does_not_depend_on_the_texts_beside_it() -> None:
    embedder = LocalEmbedder("all-minilm-l6-v2-int8")
    together = embedder.embed(TEXTS)
    alone = np.vstack([embedder.embed([text]) for text in TEXTS])
    np.testing.assert_array_equal(together, alone)
    assert embedder.embed_query(TEXTS[0]).tolist() == alone[0].tolist()


def test_a_model_without_stored_int8_products_is_refused() -> None:
    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    plain = helper.make_model(graph).SerializeToString()
    with pytest.raises(ModelFileError, match="no matrix product on stored int8 weights"):
        integer_matmuls(plain, source="plain.onnx")
    with pytest.raises(ModelFileError):
        integer_matmuls(b"not a model", source="broken.onnx")
