"""The API behind the Knowledge and Models pages, over real HTTP on loopback: knowledge bases
on the real MiniLM embedder (uploads of good, corrupt and unsupported files), the catalog with
its filters, the recommender and the sizing calculator against ``outcrop.size()``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.catalog.models import filter_models, find, recommend
from outcrop.catalog.sizing import size
from outcrop.providers.testing import FunctionModel
from outcrop.rag import KnowledgeBase
from outcrop.serve.app import ServeConfig, create_app
from outcrop.serve.keys import create_key
from outcrop.types import ChatRequest

from .serving import LiveServer
from .test_rag_loaders import make_pdf

PASSWORDS = (
    "# Accounts\n\n## Resetting a password\n\nTo reset your password, open Settings, choose "
    "Security and click Reset password. The reset link expires after 30 minutes.\n"
)
GUIDE_PAGES = ["Orders ship within 2 working days.", "Delivery in the EU takes 3 to 5 days."]
BODY_LIMIT = 256 * 1024


def reply(request: ChatRequest) -> str:
    return "The reset link expires after 30 minutes [1]."


@pytest.fixture
def gw(store: Store) -> Gateway:
    # The real local embedder (all-MiniLM-L6-v2), a test double for answers.
    return Gateway(
        settings=Settings(default_model="fn:answer"),
        store=store,
        providers={"fn": FunctionModel(reply)},
        sleep=lambda s: None,
    )


@pytest.fixture
def live(gw: Gateway) -> Iterator[LiveServer]:
    server = LiveServer(create_app(gw, ServeConfig(max_body_bytes=BODY_LIMIT))).start()
    yield server
    server.stop()


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60) as client:
        yield client


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def upload(http: httpx.Client, name: str, files: dict[str, bytes], **params: Any) -> httpx.Response:
    parts = [("files", (file, data)) for file, data in files.items()]
    return http.post(f"/v1/knowledge-bases/{name}/documents", files=parts, params=params)


def statuses(report: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {f["file"]: (f["status"], f["reason"]) for f in report["files"]}


def sources(http: httpx.Client, name: str, query: str) -> list[str]:
    hits = http.post(f"/v1/knowledge-bases/{name}/search", json={"query": query, "k": 3})
    assert hits.status_code == 200, hits.text
    return [h["source"] for h in hits.json()["data"]]


# -- knowledge bases ---------------------------------------------------------------------


def test_create_list_and_show_a_knowledge_base(http: httpx.Client) -> None:
    listed = http.get("/v1/knowledge-bases").json()
    assert listed["data"] == []
    assert listed["upload"]["max_body_bytes"] == BODY_LIMIT
    assert listed["upload"]["max_file_bytes"] == BODY_LIMIT  # the smaller of the two limits
    assert ".pdf" in listed["upload"]["types"]

    made = http.post("/v1/knowledge-bases", json={"name": "handbook"})
    assert made.status_code == 201, made.text
    assert made.json()["embedder"] == "local:all-minilm-l6-v2-int8"
    assert made.json()["documents"] == 0 and made.json()["size_bytes"] > 0
    (row,) = http.get("/v1/knowledge-bases").json()["data"]
    assert (row["name"], row["documents"], row["error"]) == ("handbook", 0, None)
    shown = http.get("/v1/knowledge-bases/handbook").json()
    assert shown["documents_list"] == [] and shown["chunk_tokens"] == 200


def test_bad_knowledge_base_input_says_what_to_fix(http: httpx.Client) -> None:
    bad = error(http.post("/v1/knowledge-bases", json={"name": "Team Docs"}), 400)
    assert "'Team Docs' is not valid" in bad["message"]
    assert "lowercase letters" in bad["message"] and bad["param"] == "name"
    assert http.post("/v1/knowledge-bases", json={"name": "handbook"}).status_code == 201
    again = error(http.post("/v1/knowledge-bases", json={"name": "handbook"}), 409)
    assert "already exists" in again["message"] and again["code"] == "kb_exists"
    unknown = error(
        http.post("/v1/knowledge-bases", json={"name": "other", "embedder": "local:minilm"}),
        400,
    )
    assert unknown["param"] == "embedder" and "Unknown model 'local:minilm'" in unknown["message"]
    overlap = error(
        http.post(
            "/v1/knowledge-bases", json={"name": "other", "chunk_tokens": 50, "chunk_overlap": 60}
        ),
        400,
    )
    assert "Chunking settings are not valid" in overlap["message"]
    assert error(http.post("/v1/knowledge-bases", json={"nam": "x"}), 400)["param"] == "name"
    # Nothing half-made is left behind.
    assert [k["name"] for k in http.get("/v1/knowledge-bases").json()["data"]] == ["handbook"]


def test_upload_then_corrupt_and_unsupported_files_change_nothing(
    http: httpx.Client, gw: Gateway
) -> None:
    assert http.post("/v1/knowledge-bases", json={"name": "handbook"}).status_code == 201
    first = upload(
        http,
        "handbook",
        {"passwords.md": PASSWORDS.encode(), "guide.pdf": make_pdf(GUIDE_PAGES, "Guide")},
    )
    assert first.status_code == 200, first.text
    report = first.json()
    assert statuses(report) == {"passwords.md": ("added", None), "guide.pdf": ("added", None)}
    assert (report["added"], report["skipped"]) == (2, 0) and report["chunks"] >= 2
    kb = report["knowledge_base"]
    assert kb["documents"] == 2
    docs = http.get("/v1/knowledge-bases/handbook").json()["documents_list"]
    assert [(d["source"], d["type"], d["pages"], d["uploaded"]) for d in docs] == [
        ("guide.pdf", "pdf", 2, True),
        ("passwords.md", "md", None, True),
    ]
    assert docs[0]["title"] == "Guide" and docs[1]["title"] == "Accounts"
    assert sources(http, "handbook", "How long does delivery take?")[0] == "guide.pdf"

    # A corrupt PDF (a new one, and one sent under the name of a good one), an unsupported
    # binary, an empty file, a binary file named .txt: each skipped, saying why.
    corrupt = b"%PDF-1.7\n" + bytes((i * 37 + 11) % 256 for i in range(2000))
    bad = upload(
        http,
        "handbook",
        {
            "broken.pdf": corrupt,
            "guide.pdf": corrupt,
            "tool.exe": b"MZ\x90\x00\x03\x00\x00\x00",
            "empty.md": b"  \n",
            "notes.txt": b"\x00\x01\x02binary",
        },
    )
    assert bad.status_code == 200, bad.text
    seen = statuses(bad.json())
    assert {f: s for f, (s, _) in seen.items()} == dict.fromkeys(seen, "skipped")
    assert seen["broken.pdf"][1].startswith("the PDF cannot be parsed: ")
    assert seen["guide.pdf"][1].startswith("the PDF cannot be parsed: ")
    assert seen["tool.exe"][1].startswith("unsupported file type '.exe'; supported types: .txt")
    assert seen["empty.md"][1] == "empty file"
    assert seen["notes.txt"][1] == "not valid UTF-8 text (binary file?)"
    after = bad.json()["knowledge_base"]
    assert (after["documents"], after["chunks"], after["tokens"]) == (
        kb["documents"],
        kb["chunks"],
        kb["tokens"],
    )
    # The earlier documents are all still there and found.
    assert sources(http, "handbook", "How long does delivery take?")[0] == "guide.pdf"
    assert sources(http, "handbook", "reset my password")[0] == "passwords.md"

    # The same file again is unchanged; a changed one replaces its earlier version.
    same = upload(http, "handbook", {"passwords.md": PASSWORDS.encode()}).json()
    assert statuses(same) == {"passwords.md": ("unchanged", None)} and same["chunks"] == 0
    changed = PASSWORDS.replace("30 minutes", "2 hours").encode()
    newer = upload(http, "handbook", {"passwords.md": changed}).json()
    assert statuses(newer) == {"passwords.md": ("updated", None)}
    assert newer["knowledge_base"]["documents"] == 2
    hits = http.post(
        "/v1/knowledge-bases/handbook/search", json={"query": "reset link expires", "k": 1}
    ).json()["data"]
    assert "2 hours" in hits[0]["text"]

    # And the answer cites what was uploaded.
    answer = http.post(
        "/v1/knowledge-bases/handbook/ask", json={"question": "When does the reset link expire?"}
    ).json()
    assert answer["found"] and answer["citations"][0]["source"] == "passwords.md"


def test_a_csv_sent_again_with_fewer_rows_drops_the_rows_gone(http: httpx.Client) -> None:
    assert http.post("/v1/knowledge-bases", json={"name": "faq"}).status_code == 201
    rows = b"question,answer\nOpening hours?,9 to 17\nParking?,Behind the shop\nPets?,Dogs only\n"
    first = upload(http, "faq", {"faq.csv": rows}).json()
    assert first["files"][0] == {
        "file": "faq.csv",
        "status": "added",
        "documents": 3,
        "reason": None,
    }
    fewer = upload(http, "faq", {"faq.csv": rows.rsplit(b"Pets", 1)[0]}).json()
    assert fewer["files"][0]["status"] == "unchanged" and fewer["files"][0]["documents"] == 2
    listed = http.get("/v1/knowledge-bases/faq").json()["documents_list"]
    assert [d["source"] for d in listed] == ["faq.csv#1", "faq.csv#2"]
    # A file whose name holds a '#' is not taken for a record of another.
    upload(http, "faq", {"notes#1.md": b"# One\n\nFirst.", "notes#2.md": b"# Two\n\nSecond."})
    again = upload(http, "faq", {"notes#1.md": b"# One\n\nFirst, changed."}).json()
    assert statuses(again) == {"notes#1.md": ("updated", None)}
    listed = http.get("/v1/knowledge-bases/faq").json()["documents_list"]
    assert [d["source"] for d in listed] == ["faq.csv#1", "faq.csv#2", "notes#1.md", "notes#2.md"]
    # Nor is a file named after another plus '#…': sending "a.md" keeps "a.md#b.md".
    upload(http, "faq", {"a.md#b.md": b"# B\n\nKept.", "a.md": b"# A\n\nFirst."})
    upload(http, "faq", {"a.md": b"# A\n\nChanged."})
    listed = http.get("/v1/knowledge-bases/faq").json()["documents_list"]
    assert {"a.md", "a.md#b.md"} <= {d["source"] for d in listed}


def test_bad_uploads_are_refused_with_a_message(http: httpx.Client) -> None:
    assert http.post("/v1/knowledge-bases", json={"name": "handbook"}).status_code == 201
    url = "/v1/knowledge-bases/handbook/documents"
    as_json = error(http.post(url, json={"files": ["a.md"]}), 415)
    assert "multipart/form-data" in as_json["message"] and "'files'" in as_json["message"]
    no_files = error(http.post(url, files=[("other", ("a.md", b"# A\n\ntext"))]), 400)
    assert no_files["message"].startswith("Unknown form field 'other'")
    text_only = error(http.post(url, files=[("files", (None, b"a.md"))]), 400)
    assert text_only["message"].startswith("The form field 'files' holds text, not a file")
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    empty_form = error(http.post(url, headers=multipart, content=b"--b--\r\n"), 400)
    assert "No file in the upload" in empty_form["message"]
    broken = error(
        http.post(url, headers={"content-type": "multipart/form-data"}, content=b"junk"), 400
    )
    assert "could not be read as multipart/form-data" in broken["message"]
    too_big = error(upload(http, "handbook", {"big.md": b"# Big\n\n" + b"word " * 60_000}), 413)
    assert "over the server's limit of 262,144 bytes" in too_big["message"]
    # A file over the per-file limit is skipped; the others in the same upload are taken.
    mixed = upload(
        http,
        "handbook",
        {"big.md": b"# Big\n\n" + b"word " * 30_000, "small.md": b"# Small\n\nA short note."},
        max_mb=0.1,
    ).json()
    found = statuses(mixed)
    assert found["small.md"] == ("added", None)
    assert found["big.md"][0] == "skipped"
    assert found["big.md"][1].startswith("larger than the 102.4 KB limit")
    # Names are files, never paths; names that cannot be files are skipped.
    odd = upload(http, "handbook", {"../../escape.md": b"# Out\n\nnot outside", ".": b"x"}).json()
    assert statuses(odd)["../../escape.md"] == ("added", None)
    assert statuses(odd)["."] == (
        "skipped",
        "the file has no name; send it with a file name such as notes.md",
    )
    nameless = error(upload(http, "handbook", {"": b"x"}), 400)["message"]
    assert nameless.startswith("The form field 'files' holds text, not a file")
    names = [d["source"] for d in http.get("/v1/knowledge-bases/handbook").json()["documents_list"]]
    assert names == ["escape.md", "small.md"]
    bad_option = error(upload(http, "handbook", {"a.md": b"# A\n\ntext"}, max_mb=0), 400)
    assert bad_option["param"] == "query.max_mb"
    assert "greater than 0" in bad_option["message"]


def test_unknown_knowledge_bases_get_close_names(http: httpx.Client) -> None:
    assert http.post("/v1/knowledge-bases", json={"name": "handbook"}).status_code == 201
    for response in [
        http.get("/v1/knowledge-bases/handbok"),
        upload(http, "handbok", {"a.md": b"# A\n\ntext"}),
        http.delete("/v1/knowledge-bases/handbok/documents/a.md"),
    ]:
        body = error(response, 404)
        assert body["code"] == "kb_not_found"
        assert body["message"].startswith(
            "No knowledge base named 'handbok'. Did you mean 'handbook'?"
        )
    far = error(http.get("/v1/knowledge-bases/zzz"), 404)["message"]
    assert "Did you mean" not in far and "Knowledge bases: handbook" in far
    # The search and answer routes too (their 404 is no longer fuzzed: names can exist).
    for route, body in [("search", {"query": "q"}), ("ask", {"question": "q"})]:
        missing = http.post(f"/v1/knowledge-bases/handbok/{route}", json=body)
        assert error(missing, 404)["code"] == "kb_not_found"


def test_delete_a_document(http: httpx.Client) -> None:
    assert http.post("/v1/knowledge-bases", json={"name": "handbook"}).status_code == 201
    upload(http, "handbook", {"passwords.md": PASSWORDS.encode(), "notes.md": b"# N\n\nCats."})
    missing = error(http.delete("/v1/knowledge-bases/handbook/documents/password.md"), 404)
    assert "Did you mean 'passwords.md'?" in missing["message"]
    gone = http.delete("/v1/knowledge-bases/handbook/documents/passwords.md")
    assert gone.status_code == 200, gone.text
    assert gone.json()["documents"] == 1 and gone.json()["knowledge_base"]["documents"] == 1
    assert "passwords.md" not in sources(http, "handbook", "reset my password")


def test_documents_added_from_a_folder_show_and_delete_by_path(
    http: httpx.Client, gw: Gateway, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "cats.md").write_text("# Cats\n\nCats purr.\n")
    kb = KnowledgeBase.create("handbook", gateway=gw)
    kb.add(folder)
    kb.close()
    (doc,) = http.get("/v1/knowledge-bases/handbook").json()["documents_list"]
    assert (doc["source"], doc["uploaded"]) == ("notes/cats.md", False)
    gone = http.delete("/v1/knowledge-bases/handbook/documents/notes/cats.md")
    assert gone.status_code == 200, gone.text
    assert gone.json()["knowledge_base"]["documents"] == 0


def test_keys_and_knowledge_base_scopes(live: LiveServer, store: Store) -> None:
    team_key, team = create_key(store, "team", knowledge_bases=["team-*"])
    _, anyone = create_key(store, "admin")
    with httpx.Client(base_url=live.url, timeout=60) as http:
        assert error(http.get("/v1/knowledge-bases"), 401)["code"] == "missing_api_key"
        assert error(http.get("/v1/catalog/models"), 401)["code"] == "missing_api_key"
        assert (
            error(upload(http, "team-a", {"a.md": b"# A\n\nx"}), 401)["code"] == "missing_api_key"
        )
        admin = {"Authorization": f"Bearer {anyone}"}
        mine = {"Authorization": f"Bearer {team}"}
        for name in ["team-a", "private"]:
            made = http.post("/v1/knowledge-bases", json={"name": name}, headers=admin)
            assert made.status_code == 201, made.text
        listed = http.get("/v1/knowledge-bases", headers=mine).json()["data"]
        assert [k["name"] for k in listed] == ["team-a"]
        refused = error(http.get("/v1/knowledge-bases/private", headers=mine), 403)
        assert refused["code"] == "kb_not_allowed" and "team-*" in refused["message"]
        parts = [("files", ("a.md", b"# A\n\nSome text."))]
        assert (
            http.post(
                "/v1/knowledge-bases/private/documents", files=parts, headers=mine
            ).status_code
            == 403
        )
        assert (
            error(http.post("/v1/knowledge-bases", json={"name": "mine"}, headers=mine), 403)[
                "code"
            ]
            == "kb_not_allowed"
        )
        ok = http.post("/v1/knowledge-bases/team-a/documents", files=parts, headers=mine)
        assert ok.status_code == 200 and ok.json()["added"] == 1
        assert http.get("/v1/catalog/models", headers=mine).status_code == 200
    # The embedding the upload made is counted against the key that sent it.
    rows = [r for r in store.recent(limit=50) if r.kind == "embedding"]
    assert rows and {r.api_key for r in rows} == {team_key.id}


# -- the catalog ---------------------------------------------------------------------------


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["data"]]


def test_catalog_filters_match_the_library(http: httpx.Client) -> None:
    everything = http.get("/v1/catalog/models").json()
    assert len(everything["data"]) == len(filter_models()) > 10
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", everything["as_of"])
    assert "code" in everything["use_cases"] and everything["kinds"] == [
        "chat",
        "embedding",
        "image",
    ]
    cases = [
        ({"task": "code", "local": "true"}, {"task": "code", "runs_locally": True}),
        ({"max_price": "1"}, {"max_input_price": 1.0}),
        ({"modality": "image"}, {"modality": "image"}),
        ({"kind": "embedding"}, {"kind": "embedding"}),
        (
            {"min_context": "100000", "licence": "llama"},
            {"min_context": 100000, "licence": "llama"},
        ),
        (
            {"task": "summarise long contracts", "local": "false"},
            {"task": "summarise long contracts", "runs_locally": False},
        ),
    ]
    for query, kwargs in cases:
        expected = [m.id for m in filter_models(**kwargs)]
        assert expected, kwargs
        assert ids(http.get("/v1/catalog/models", params=query)) == expected, query
    smol = http.get("/v1/catalog/models/local:smollm2-135m").json()
    model = find("local:smollm2-135m")
    assert (smol["name"], smol["parameters"], smol["installed_with_outcrop"]) == (
        model.name,
        model.parameters,
        True,
    )
    assert smol["architecture"]["layers"] == model.architecture.layers  # type: ignore[union-attr]
    haiku = http.get("/v1/catalog/models/claude 3 haiku").json()
    assert haiku["price"]["input"] > 0 and "per 1M tokens" in haiku["price"]["text"]
    with_slash = http.get("/v1/catalog/models/hf:meta-llama/Llama-3.1-8B-Instruct")
    assert with_slash.status_code == 200 and with_slash.json()["parameters"] > 7e9


def test_bad_catalog_queries_name_the_problem(http: httpx.Client) -> None:
    modality = error(http.get("/v1/catalog/models", params={"modality": "video"}), 400)
    assert (
        modality["param"] == "modality"
        and "use one of: text, image, embedding" in modality["message"]
    )
    task = error(http.get("/v1/catalog/models", params={"task": "zzzz"}), 400)
    assert task["param"] == "task" and "name one of: chat" in task["message"]
    price = error(http.get("/v1/catalog/models", params={"max_price": "-1"}), 400)
    assert price["param"] == "query.max_price"
    unknown = error(http.get("/v1/catalog/models/clade-3-haiku"), 404)
    assert "Did you mean 'bedrock:anthropic.claude-3-haiku" in unknown["message"]


def test_recommend_matches_the_library(http: httpx.Client) -> None:
    task = "classify support tickets offline on a laptop"
    body = http.get("/v1/catalog/recommend", params={"task": task, "top": 3}).json()
    picks = recommend(task, top=3)
    assert [(p["model"], p["score"]) for p in body["data"]] == [
        (p.model.id, p.score) for p in picks
    ]
    assert body["data"][0]["reasons"] == list(picks[0].reasons)
    assert "classification" in body["read_as"] and "runs locally" in body["read_as"]
    empty = error(http.get("/v1/catalog/recommend", params={"task": ""}), 400)
    assert empty["param"] == "query.task"


def figures(report: dict[str, Any]) -> dict[str, Any]:
    keys = ["weights", "kv_cache", "kv_per_token", "working", "inference_total", "training_lora"]
    keys += ["training_qlora", "training_full", "rule_of_thumb_weights", "precision", "context"]
    return {k: report[k] for k in keys} | {"fits": report["fits"], "notes": report["notes"]}


def test_sizing_numbers_equal_size(http: httpx.Client) -> None:
    asked = http.post(
        "/v1/catalog/size",
        json={"model": "llama-3.1-8b", "precision": "q4_k_m", "context": 32768, "batch": 2},
    )
    assert asked.status_code == 200, asked.text
    expected = size(
        find("llama-3.1-8b").sizing_architecture(), precision="q4_k_m", context=32768, batch=2
    ).to_dict()
    assert figures(asked.json()) == figures(expected)
    assert asked.json()["architecture"]["layers"] == 32
    bare = http.post(
        "/v1/catalog/size", json={"params": "7B", "precision": "fp16", "kv_cache_type": "q8_0"}
    ).json()
    assert figures(bare) == figures(size("7B", precision="fp16", kv_cache_type="q8_0").to_dict())
    assert bare["rule_of_thumb_weights"] == 28e9
    as_number = http.post("/v1/catalog/size", json={"params": 135e6}).json()
    assert figures(as_number) == figures(size(135e6).to_dict())
    choices = http.get("/v1/catalog/size").json()
    assert {"fp16", "q4_k_m", "nf4"} <= set(choices["precisions"])
    assert choices["kv_cache_types"][:2] == ["f32", "f16"] and "H100 80GB" in choices["gpus"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({}, "model", "Give a model or params (one of them)"),
        ({"model": "llama-3.1-8b", "params": "7B"}, "params", "Give a model or params"),
        ({"params": "seven"}, "params", "'seven' is not a parameter count; write e.g. 7B"),
        ({"params": "1000T"}, "params", "give between 100K and 100T parameters"),
        ({"params": "7B", "precision": "fp12"}, "precision", "Unknown precision 'fp12'"),
        ({"params": "7B", "kv_cache_type": "q3"}, "kv_cache_type", "Unknown KV cache type 'q3'"),
        ({"params": "7B", "context": 0}, "context", "greater than or equal to 1"),
        ({"params": "7B", "batch": "2"}, "batch", "valid integer"),
        ({"params": "7B", "gpu": "H100"}, "gpu", "Extra inputs are not permitted"),
        ({"model": "gpt-9"}, "model", "Unknown model 'gpt-9'"),
        ({"model": "config.json"}, "model", "Unknown model 'config.json'"),
    ],
)
def test_bad_sizing_input_names_the_field(
    http: httpx.Client, body: dict[str, Any], param: str, words: str
) -> None:
    bad = error(
        http.post("/v1/catalog/size", json=body),
        404 if param == "model" and body.get("model") else 400,
    )
    assert bad["param"] == param
    assert words in bad["message"]


# -- the docs -------------------------------------------------------------------------------


def test_the_docs_curl_examples_run(live: LiveServer, tmp_path: Path) -> None:
    """docs/monitor.md's commands, against this server, with the files they name."""
    import json
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("the docs' examples need curl")
    text = (Path(__file__).parent.parent / "docs" / "monitor.md").read_text(encoding="utf-8")
    section = text.split("## Knowledge and Models pages", 1)[1]
    (block,) = re.findall(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    (tmp_path / "passwords.md").write_text(PASSWORDS)
    (tmp_path / "scan.pdf").write_bytes(make_pdf(["", ""]))
    answers = []
    for line in block.strip().splitlines():
        command = line.replace("http://127.0.0.1:8000", live.url)
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
    made, uploaded, sized = answers
    assert made["name"] == "handbook"
    assert statuses(uploaded) == {
        "passwords.md": ("added", None),
        "scan.pdf": ("skipped", "no extractable text (scanned images?); run OCR on it first"),
    }
    expected = size(
        find("llama-3.1-8b").sizing_architecture(), precision="q4_k_m", context=8192
    ).to_dict()
    assert figures(sized) == figures(expected)
