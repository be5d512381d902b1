"""Re-rankers: sentence evidence on the real embedder, and the LLM's Yes/No logit gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outcrop import Gateway, InvalidRequestError, Settings, Store
from outcrop.providers.testing import TestModel
from outcrop.rag import KnowledgeBase, LoadedDocument, rerank
from outcrop.rag.rerank import LLMReranker, SentenceReranker, fuse, split_sentences

from .helpers import run

QUERY = "Vitamin D supplements lower the risk of hip fractures in elderly women."

# One sentence states the claim; the rest of the abstract is about something else.
EVIDENCE = (
    "The cohort enrolled 2,000 participants across twelve clinics in Norway. Blood samples "
    "were drawn every six months and stored at minus 80 degrees. Questionnaires covered "
    "diet, smoking and physical activity. Daily vitamin D supplements lowered the rate of hip "
    "fractures among elderly women. Statistical analysis used Cox regression. Funding came "
    "from a national research council. The authors declare no competing interests."
)
# Every word of the query, scattered over sentences about other things.
SCATTERED = [
    (
        "Elderly women often take supplements and vitamin tablets. Hip replacements are "
        "common. The risk of falls in elderly women rises. Vitamin D and calcium are sold in "
        "pharmacies. Fractures of the wrist in women were counted."
    ),
    (
        "Supplements are popular among elderly women. Hip pain lowers mobility. Fractures in "
        "elderly people raise the risk of admission. Women report vitamin D use in surveys."
    ),
    (
        "Elderly women often report hip pain. Vitamin supplements are sold in pharmacies. "
        "Fractures and the risk of falls rise with age. Vitamin D levels in women vary by "
        "season."
    ),
]
# And two passages about nothing of the kind.
UNRELATED = [
    "Orders ship within 2 working days. Delivery in the EU takes 3 to 5 working days.",
    "Cats sleep for most of the day. They purr when content and hunt at dusk.",
]


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(settings=Settings(default_model="test"), store=store)


@pytest.fixture
def kb(gw: Gateway) -> KnowledgeBase:
    kb = KnowledgeBase.create("claims", gateway=gw)
    docs = [("evidence", EVIDENCE)] + [(f"scattered-{i}", t) for i, t in enumerate(SCATTERED)]
    docs += [(f"unrelated-{i}", t) for i, t in enumerate(UNRELATED)]
    kb.add_documents(
        [
            LoadedDocument(name, Path(name), text, title=None, metadata={"type": "txt"})
            for name, text in docs
        ],
        origin="test",
    )
    return kb


def test_one_matching_sentence_beats_scattered_overlap(kb: KnowledgeBase):
    hybrid = kb.search(QUERY, k=6)
    assert hybrid[0].chunk.source != "evidence"  # the whole-passage scores favour overlap
    by_sentence = kb.search(QUERY, k=6, rerank=SentenceReranker(kb.embedder, weight=0.5))
    assert by_sentence[0].chunk.source == "evidence"
    best = by_sentence[0].scores
    assert {"dense", "bm25", "hybrid", "sentence", "rerank"} <= set(best)
    assert best["sentence"] > 0.9 > max(r.scores["sentence"] for r in by_sentence[1:])
    assert [r.score for r in by_sentence] == sorted((r.score for r in by_sentence), reverse=True)


def test_the_named_reranker_fuses_at_its_tuned_weight(kb: KnowledgeBase):
    results = kb.search(QUERY, k=6, rerank="sentences")
    judged = [r for r in results if "sentence" in r.scores]
    expected = fuse(
        [r.scores["hybrid"] for r in judged],
        [r.scores["sentence"] for r in judged],
        SentenceReranker(kb.embedder).weight,
    )
    assert [r.scores["rerank"] for r in judged] == pytest.approx(expected)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_sentence_vectors_are_cached(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(rerank, "_CACHES", {})
    calls: list[int] = []
    embedder = kb.embedder
    reranker = SentenceReranker(embedder, weight=1.0)
    original = embedder.embed

    def counted(texts: list[str]):
        calls.append(len(texts))
        return original(texts)

    embedder.embed = counted  # type: ignore[method-assign]
    first = reranker.score(QUERY, [EVIDENCE, *SCATTERED])
    again = reranker.score("hip fractures", [EVIDENCE, *SCATTERED])
    sentences = len({s for p in [EVIDENCE, *SCATTERED] for s in split_sentences(p)})
    assert calls == [sentences, 1, 1]  # every sentence once, then each query
    assert first[0] == max(first) and len(again) == 4


def test_split_sentences_keeps_numbers_and_joins_fragments():
    text = "Mean age was 71.5 years (SD 4.2). Risk fell by 30%. P < 0.05.\nIn short, the risk fell."
    assert split_sentences(text) == [
        "Mean age was 71.5 years (SD 4.2).",
        "Risk fell by 30%. P < 0.05.",
        "In short, the risk fell.",
    ]


def test_fuse_weights_scaled_scores():
    assert fuse([3.0, 1.0], [0.1, 0.3], 0.5) == [0.5, 0.5]
    assert fuse([3.0, 1.0], [0.1, 0.3], 0.0) == [1.0, 0.0]
    assert fuse([3.0, 1.0], [-2.5, 4.0], 1.0) == [-2.5, 4.0]  # the re-ranker's own scores


def test_bad_rerank_input_names_the_choices(kb: KnowledgeBase, capsys, monkeypatch):
    with pytest.raises(InvalidRequestError, match=r"Unknown re-ranker 'sentence'.*sentences, llm"):
        kb.search(QUERY, rerank="sentence")
    with pytest.raises(InvalidRequestError, match="rerank takes a name"):
        kb.search(QUERY, rerank=42)
    with pytest.raises(InvalidRequestError, match="weight must be within 0 and 1"):
        SentenceReranker(kb.embedder, weight=1.5)
    assert kb.info()["chunks"] == 6  # nothing lost

    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: kb.gateway))
    code, _, err = run(capsys, "kb", "search", "claims", QUERY, "--rerank", "cross-encoder")
    assert code == 1 and "Unknown re-ranker 'cross-encoder'" in err and "sentences" in err
    code, out, _ = run(capsys, "kb", "search", "claims", QUERY, "--rerank", "sentences", "--json")
    hits = json.loads(out)
    assert code == 0 and all("sentence" in h["scores"] for h in hits)
    code, _, err = run(capsys, "kb", "ask", "claims", QUERY, "--rerank", "colbert")
    assert code == 1 and "Unknown re-ranker 'colbert'" in err


def test_ask_takes_a_reranker(store: Store, kb: KnowledgeBase):
    model = TestModel(default="Daily vitamin D lowered hip fractures [1].")
    gw = Gateway(settings=Settings(default_model="test"), store=store, providers={"test": model})
    reranker = SentenceReranker(KnowledgeBase.open("claims", gateway=gw).embedder, weight=0.5)
    answer = KnowledgeBase.open("claims", gateway=gw).ask(QUERY, k=1, rerank=reranker)
    assert [s.chunk.source for s in answer.sources] == ["evidence"]
    assert answer.citations[0].source == "evidence"


@pytest.mark.slow
def test_relevant_passages_score_higher(store: Store):
    gw = Gateway(settings=Settings(), store=store)
    reranker = LLMReranker(gw, "local:qwen2.5-coder-0.5b")
    scores = reranker.score(
        "How long does the password reset link stay valid?",
        [
            "The password reset link we email you expires after 30 minutes.",
            "Our shop sells second-hand books and ships across the EU.",
        ],
    )
    assert scores[0] > scores[1]
    row = store.recent(1)[0]
    assert (row.kind, row.model, row.status) == ("score", "local:qwen2.5-coder-0.5b", "ok")


def test_remote_models_cannot_score(store: Store):
    gw = Gateway(settings=Settings(), store=store)
    with pytest.raises(InvalidRequestError, match="needs the model's logits"):
        gw.yes_no([[]], model="openai:gpt-4o-mini")


def test_the_sentence_weight_defaults_to_the_one_tuned_for_the_embedder() -> None:
    from outcrop.embeddings.local import LocalEmbedder

    assert SentenceReranker(LocalEmbedder("all-minilm-l6-v2-int8")).weight == 0.3
    assert SentenceReranker(LocalEmbedder("all-minilm-l6-v2")).weight == 0.2
    assert SentenceReranker(LocalEmbedder("all-minilm-l6-v2"), weight=0.7).weight == 0.7
