"""Knowledge bases on PostgreSQL + pgvector: the store beside SQLite's, `kb copy` between
engines, and what a user sees when the database is missing, wrong or goes away.

The server is a real PostgreSQL with pgvector (see the ``pgvector_server`` fixture)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from outcrop import Gateway, InvalidRequestError, Settings, Store, UserError
from outcrop.observe.engines import StoreUnavailableError
from outcrop.providers.testing import FunctionModel
from outcrop.rag import KnowledgeBase, kb_names
from outcrop.rag.pgstore import PgKBStore, close_pools
from outcrop.rag.store import KBStore, NewChunk

from .helpers import run

DOCS = {
    "passwords.md": (
        "# Accounts\n\n## Resetting a password\n\nTo reset your password, open Settings, choose "
        "Security and click Reset password. The reset link expires after 30 minutes.\n"
    ),
    "shipping.md": (
        "# Shipping\n\nOrders ship within 2 working days. Delivery in the EU takes 3 to 5 "
        "working days. Shipping is free above 40 euros.\n"
    ),
    "returns.txt": "Books can be returned within 30 days with the receipt; we refund the card.\n",
    "notes/cats.md": "# Cats\n\nCats sleep for most of the day and purr when content.\n",
}
QUERIES = ["How do I reset my password?", "free shipping", "refund a book", "cats purring"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for name, text in DOCS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(
        settings=Settings(default_model="fn"),
        store=store,
        providers={"fn": FunctionModel(lambda request: "Orders ship within 2 days [1].")},
    )


def _key(kb: KnowledgeBase, results: list) -> list[tuple[str, int, float]]:
    return [(r.chunk.source, r.chunk.index, round(r.score, 4)) for r in results]


def _embedding_calls(store: Store) -> int:
    return sum(1 for r in store.recent(10_000) if r.kind == "embedding")


# -- the store, beside SQLite's ------------------------------------------------------


WORDS = [
    "tide",
    "moon",
    "river",
    "stone",
    "cloud",
    "winter",
    "harbour",
    "lantern",
    "orchard",
    "copper",
    "falcon",
    "meadow",
]


def _corpus(n: int, dims: int = 16, seed: int = 0):
    """``n`` one-chunk documents with words, metadata and unit vectors (no embedder)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS, size=12))
        chunk = NewChunk(0, f"{words} number{i}", 0, len(words), ["Notes", f"Part {i % 4}"], 14)
        metadata = {"type": "md" if i % 2 else "txt", "year": 2020 + i % 3, "draft": i % 5 == 0}
        items.append(
            ("origin", f"dir{i % 3}/doc{i:04}.md", f"h{i}", f"Doc {i}", metadata, words, [chunk])
        )
    vectors = rng.normal(size=(n, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return items, vectors


@pytest.fixture
def both(tmp_path: Path, pgvector_url: str) -> tuple[KBStore, PgKBStore]:
    """The same 120 documents in a SQLite store and in a PostgreSQL one."""
    items, vectors = _corpus(120)
    lite = KBStore(tmp_path / "lite.db")
    pg = PgKBStore.create(pgvector_url, "same", {})
    for store in (lite, pg):
        store.replace_documents(items[:60], vectors[:60])
        store.replace_documents(items[60:], vectors[60:])
    return lite, pg


def _named(store, hits):
    rows = store.chunks([cid for cid, _ in hits])
    return [(rows[cid].source, round(score, 4)) for cid, score in hits]


def _sources(store, filters):
    ids = store.chunk_ids_matching(filters)
    return sorted(row.source for row in store.chunks(list(ids)).values())


def test_nearest_and_filters_agree_with_sqlite(both):
    lite, pg = both
    _, vectors = _corpus(120)
    for q in (vectors[3], vectors[77], -vectors[10]):
        assert _named(pg, pg.nearest(q, 10)) == _named(lite, lite.nearest(q, 10))
    for filters in (
        {"source": "dir1/*"},
        {"source": "dir[02]/doc00?[13].md"},
        {"source": "dir[^0]/*", "year": "2021"},
        {"type": "md", "draft": "1"},
        {"title": "Doc 7"},
        {"year": "1999"},
    ):
        if filters != {"year": "1999"}:
            assert _sources(pg, filters), filters  # the filter selects something
        assert _sources(pg, filters) == _sources(lite, filters), filters
        assert _named(pg, pg.nearest(vectors[5], 8, filters)) == _named(
            lite, lite.nearest(vectors[5], 8, filters)
        ), filters


def test_bm25_is_okapi_over_the_stored_lexemes(both):
    """The scores equal a plain-Python BM25 (k1 1.2, b 0.75, FTS5's idf) computed from the
    lexemes PostgreSQL stored; the ranking matches SQLite FTS5's on the same chunks."""
    lite, pg = both
    with psycopg.connect(pg.url) as db:
        rows = db.execute(
            f'SELECT c.id, u.lexeme, cardinality(u.positions) FROM "{pg.schema}".chunks c, '
            "unnest(c.fts) u"
        ).fetchall()
        query_lexemes = db.execute(
            "SELECT tsvector_to_array(to_tsvector('english', 'lantern falcon'))"
        ).fetchone()[0]
    tf: dict[int, Counter] = {}
    for cid, lexeme, count in rows:
        tf.setdefault(cid, Counter())[lexeme] = count
    n = len(tf)
    avg = sum(sum(c.values()) for c in tf.values()) / n
    df = Counter(lexeme for c in tf.values() for lexeme in c)
    expected = {}
    for cid, counts in tf.items():
        length = sum(counts.values())
        score = 0.0
        for lexeme in query_lexemes:
            if counts[lexeme]:
                idf = max(math.log((n - df[lexeme] + 0.5) / (df[lexeme] + 0.5)), 1e-6)
                f = counts[lexeme]
                score += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * length / avg))
        if score:
            expected[cid] = score
    got = dict(pg.bm25('"lantern" OR "falcon"', 200))
    assert got.keys() == expected.keys()
    assert all(abs(got[c] - expected[c]) < 1e-9 for c in got)
    top_pg = [s for s, _ in _named(pg, pg.bm25('"lantern" OR "falcon"', 5))]
    top_lite = [s for s, _ in _named(lite, lite.bm25('"lantern" OR "falcon"', 5))]
    assert top_pg[0] == top_lite[0]
    # Filters and allowed ids restrict the ranking inside the query.
    only = pg.bm25('"lantern"', 200, filters={"source": "dir2/*"})
    assert only and {s for s, _ in _named(pg, only)} <= {
        f"dir2/doc{i:04}.md" for i in range(2, 120, 3)
    }
    some = set(list(got)[:3])
    assert {cid for cid, _ in pg.bm25('"lantern" OR "falcon"', 200, allowed=some)} <= some


def test_documents_read_back_as_written_and_deletes_keep_the_statistics(both):
    lite, pg = both
    items, _vectors = _corpus(120)
    ids = [d.id for d in pg.documents()][:5]
    back, back_vectors = pg.read_documents(ids)
    lite_back, lite_vectors = lite.read_documents([d.id for d in lite.documents()][:5])
    assert back == lite_back
    assert np.array_equal(back_vectors, lite_vectors)
    assert pg.delete_documents([("origin", "dir0/doc0000.md"), ("origin", "nope")]) == 1
    assert pg.counts()[:2] == (119, 119)
    with psycopg.connect(pg.url) as db:
        stats = db.execute(f'SELECT chunks, length FROM "{pg.schema}".stats').fetchone()
        actual = db.execute(f'SELECT count(*), sum(fts_len) FROM "{pg.schema}".chunks').fetchone()
    assert tuple(stats) == tuple(actual)
    with pytest.raises(UserError, match="16-dimension vectors: vectors of two embedders"):
        pg.replace_documents(items[:1], np.ones((1, 8), dtype=np.float32))
    assert pg.counts()[:2] == (119, 119)  # nothing lost


def test_dense_search_uses_the_hnsw_index_with_high_recall(pgvector_url: str):
    items, vectors = _corpus(3000, dims=32, seed=1)
    pg = PgKBStore.create(pgvector_url, "big", {})
    pg.replace_documents(items, vectors)
    ids, matrix = pg.vectors(32)
    with psycopg.connect(pg.url) as db:
        db.execute("ANALYZE " + f'"{pg.schema}".chunks')
        plan = "\n".join(
            r[0]
            for r in db.execute(
                f'EXPLAIN SELECT id FROM "{pg.schema}".chunks ORDER BY embedding <=> '
                f"'{json.dumps(vectors[0].tolist())}' LIMIT 10"
            )
        )
    assert "chunks_embedding" in plan
    rng = np.random.default_rng(2)
    recalls = []
    for _ in range(30):
        q = rng.normal(size=32).astype(np.float32)
        q /= np.linalg.norm(q)
        exact = set(ids[np.argsort(-(matrix @ q))[:10]].tolist())
        recalls.append(len({cid for cid, _ in pg.nearest(q, 10)} & exact) / 10)
    assert sum(recalls) / len(recalls) >= 0.95


def test_concurrent_writers_keep_the_store_consistent(pgvector_url: str):
    items, vectors = _corpus(80)
    pg = PgKBStore.create(pgvector_url, "busy", {})
    errors: list[BaseException] = []

    def write(part: int) -> None:
        try:
            for i in range(part, 80, 4):
                pg.replace_documents([items[i]], vectors[i : i + 1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pg.counts()[:2] == (80, 80) and pg.generation() == 80


# -- knowledge bases on both engines, and kb copy ----------------------------------------


def test_copy_both_ways_gives_identical_results_without_re_embedding(
    gw: Gateway, folder: Path, pgvector_url: str, store: Store
):
    lite = KnowledgeBase.create("handbook", gateway=gw, engine="sqlite")
    lite.add(folder)
    calls = _embedding_calls(store)
    pg = KnowledgeBase.copy("handbook", "handbook-pg", url=pgvector_url, gateway=gw)
    back = KnowledgeBase.copy("handbook-pg", "handbook-back", engine="sqlite", gateway=gw)
    assert _embedding_calls(store) == calls  # copies carry the vectors
    assert (pg.engine, back.engine) == ("postgres", "sqlite")
    assert pg.info()["documents"] == back.info()["documents"] == len(DOCS)
    assert pg.embedder_id == back.embedder_id == lite.embedder_id
    for query in QUERIES:
        for mode in ("dense", "bm25", "hybrid"):
            assert _key(back, back.search(query, k=4, mode=mode)) == _key(
                lite, lite.search(query, k=4, mode=mode)
            ), (query, mode)
        assert _key(pg, pg.search(query, k=4, mode="dense")) == _key(
            lite, lite.search(query, k=4, mode="dense")
        ), query
        for mode in ("bm25", "hybrid"):
            assert pg.search(query, k=1, mode=mode)[0].chunk.source == (
                lite.search(query, k=1, mode=mode)[0].chunk.source
            ), (query, mode)
    filtered = {"source": "notes/*"}
    assert _key(pg, pg.search("days", k=3, filters=filtered, mode="dense")) == _key(
        lite, lite.search("days", k=3, filters=filtered, mode="dense")
    )
    assert sorted(kb_names()) == ["handbook", "handbook-back", "handbook-pg"]


def test_copy_refuses_an_existing_target_unless_replace(
    gw: Gateway, folder: Path, pgvector_url: str
):
    KnowledgeBase.create("handbook", gateway=gw, engine="sqlite").add(folder)
    other = KnowledgeBase.create("other", gateway=gw, url=pgvector_url)
    with pytest.raises(UserError, match=r"'other' already exists; pass --replace"):
        KnowledgeBase.copy("handbook", "other", url=pgvector_url, gateway=gw)
    assert other.info()["documents"] == 0  # untouched
    replaced = KnowledgeBase.copy("handbook", "other", url=pgvector_url, replace=True, gateway=gw)
    assert replaced.info()["documents"] == len(DOCS)
    with pytest.raises(InvalidRequestError, match="onto itself"):
        KnowledgeBase.copy("handbook", "handbook", gateway=gw)
    with pytest.raises(InvalidRequestError, match="not valid"):
        KnowledgeBase.copy("handbook", "Bad Name", gateway=gw)
    with pytest.raises(InvalidRequestError, match="Did you mean 'handbook'"):
        KnowledgeBase.copy("handbok", "x", gateway=gw)
    assert "x" not in kb_names()


KILL_COPY = """
import sys
from outcrop import Gateway
from outcrop.rag import KnowledgeBase
KnowledgeBase.copy("big", "big-copy", url=sys.argv[1], gateway=Gateway(), batch_chunks=1)
"""


def _all(kb: KnowledgeBase):
    return kb.store.read_documents([d.id for d in kb.store.documents()])


def test_a_killed_copy_is_marked_unfinished_and_a_rerun_finishes_it(
    gw: Gateway, pgvector_url: str, outcrop_home: Path, capsys, monkeypatch
):
    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    source = KnowledgeBase.create("big", gateway=gw, engine="sqlite")
    items, vectors = _corpus(1500, dims=384)
    source.store.replace_documents(items, vectors)
    env = {**os.environ, "OUTCROP_HOME": str(outcrop_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_COPY, pgvector_url], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                copy = KnowledgeBase.open("big-copy", gateway=gw, unfinished_ok=True)
            except InvalidRequestError:  # not created yet
                time.sleep(0.05)
                continue
            if copy.info()["documents"] >= 20:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = KnowledgeBase.open("big-copy", gateway=gw, unfinished_ok=True)
    assert 0 < partial.info()["documents"] < 1500, "the kill should land mid-copy"
    assert partial.info()["complete"] is False
    with pytest.raises(UserError, match=r"unfinished copy of 'big': run `outcrop kb copy big"):
        KnowledgeBase.open("big-copy", gateway=gw)
    code, out, _ = run(capsys, "kb", "list")
    assert code == 0 and re.search(r"big-copy\s+postgres .*\(unfinished copy\)", out)
    # A copy from another source, or another chunking, never resumes it.
    KnowledgeBase.create("small", gateway=gw, engine="sqlite")
    with pytest.raises(UserError, match="already exists; pass --replace"):
        KnowledgeBase.copy("small", "big-copy", gateway=gw)
    source.store.set_meta(chunk_tokens="100")
    with pytest.raises(UserError, match="never mix"):
        KnowledgeBase.copy("big", "big-copy", gateway=gw)
    source.store.set_meta(chunk_tokens="200")
    done = KnowledgeBase.copy("big", "big-copy", gateway=gw)
    assert done.info()["complete"] is True
    got, got_vectors = _all(done)
    want, want_vectors = _all(source)
    assert got == want and np.array_equal(got_vectors, want_vectors)


# -- choosing the engine, and the CLI ------------------------------------------------------


def test_the_configured_database_is_the_default_and_both_engines_list_together(
    gw: Gateway, folder: Path, pgvector_url: str, monkeypatch: pytest.MonkeyPatch, outcrop_home
):
    local = KnowledgeBase.create("local", gateway=gw)
    assert local.engine == "sqlite"
    elsewhere = KnowledgeBase.create("elsewhere", gateway=gw, url=pgvector_url)
    pointer = outcrop_home / "kb" / "elsewhere.pg"
    assert pointer.stat().st_mode & 0o777 == 0o600  # a URL may hold a password
    monkeypatch.setenv("OUTCROP_DATABASE_URL", pgvector_url)
    shared = KnowledgeBase.create("shared", gateway=gw)
    assert shared.engine == "postgres" and not (outcrop_home / "kb" / "shared.pg").exists()
    assert KnowledgeBase.create("pinned", gateway=gw, engine="sqlite").engine == "sqlite"
    assert kb_names() == ["elsewhere", "local", "pinned", "shared"]
    # Another machine pointed at the same database sees the shared ones.
    monkeypatch.setenv("OUTCROP_HOME", str(outcrop_home.parent / "other-home"))
    assert kb_names() == ["elsewhere", "shared"]
    assert KnowledgeBase.open("shared", gateway=gw).info()["engine"] == "postgres"
    monkeypatch.setenv("OUTCROP_HOME", str(outcrop_home))
    KnowledgeBase.remove("elsewhere")
    assert not pointer.exists() and "elsewhere" not in PgKBStore.names(pgvector_url)
    assert elsewhere.name == "elsewhere"
    # A SQLite URL configures outcrop's other stores; knowledge bases stay files.
    monkeypatch.setenv("OUTCROP_DATABASE_URL", "sqlite:///elsewhere.db")
    assert KnowledgeBase.create("filed", gateway=gw).engine == "sqlite"


def test_kb_cli_engines_list_and_copy(
    capsys, folder: Path, pgvector_url: str, monkeypatch: pytest.MonkeyPatch, gw: Gateway
):
    import io

    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, _ = run(capsys, "kb", "create", "lite", "--engine", "sqlite")
    assert code == 0 and "on sqlite" in out
    code, out, _ = run(capsys, "kb", "create", "pg", "--engine", "postgres", "--url", pgvector_url)
    assert code == 0 and "on postgres" in out and "schema outcrop_kb_pg" in out
    assert run(capsys, "kb", "add", "lite", str(folder))[0] == 0
    code, out, err = run(capsys, "kb", "copy", "lite", "lite-pg", "--to-url", pgvector_url)
    assert code == 0 and "Copied lite to lite-pg on postgres" in out and "Copying lite" in err
    code, out, _ = run(capsys, "kb", "list")
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert rows == {"lite": "sqlite", "lite-pg": "postgres", "pg": "postgres"}
    listed = json.loads(run(capsys, "kb", "list", "--json")[1])
    assert {i["name"]: (i["engine"], i["documents"]) for i in listed} == {
        "lite": ("sqlite", len(DOCS)),
        "lite-pg": ("postgres", len(DOCS)),
        "pg": ("postgres", 0),
    }
    code, _, err = run(capsys, "kb", "copy", "lite", "lite-pg", "--to-url", pgvector_url)
    assert code == 1 and "already exists; pass --replace" in err
    code, out, _ = run(capsys, "kb", "copy", "lite-pg", "pg", "--replace", "--json")
    assert code == 0 and json.loads(out)["documents"] == len(DOCS)
    code, out, _ = run(capsys, "kb", "search", "pg", "when do orders ship", "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["source"] == "shipping.md"
    assert run(capsys, "kb", "rm", "pg", "--yes")[0] == 0
    assert run(capsys, "kb", "info", "pg")[0] == 1
    code, _, err = run(capsys, "kb", "create", "x", "--engine", "mysql")
    assert code != 0 and "'mysql' is not one of 'sqlite', 'postgres'" in err


# -- bad input ---------------------------------------------------------------------------


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_unreachable_database_is_one_clear_line_without_the_password(
    capsys, gw: Gateway, monkeypatch: pytest.MonkeyPatch, outcrop_home: Path
):
    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    url = "postgresql://kb:s3cret@127.0.0.1:1/outcrop"
    with pytest.raises(UserError, match=r"Cannot reach the PostgreSQL database postgresql://kb@"):
        KnowledgeBase.create("x", gateway=gw, url=url)
    code, _, err = run(capsys, "kb", "create", "x", "--url", url)
    line = _one_clear_line(err)
    assert code == 1 and "s3cret" not in err
    assert (
        "postgresql://kb@127.0.0.1:1/outcrop" in line and "start the server or fix the URL" in line
    )
    assert not (outcrop_home / "kb" / "x.pg").exists()
    monkeypatch.setenv("OUTCROP_DATABASE_URL", url)
    code, _, err = run(capsys, "kb", "list")
    assert code == 1 and "Cannot reach" in _one_clear_line(err) and "s3cret" not in err


def test_a_server_without_pgvector_says_how_to_get_it(gw: Gateway, capsys, monkeypatch):
    system = os.environ.get(
        "OUTCROP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    try:
        with psycopg.connect(system, connect_timeout=3) as db:
            if db.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
                pytest.skip("this PostgreSQL has pgvector")
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    with pytest.raises(UserError) as caught:
        KnowledgeBase.create("x", gateway=gw, url=system)
    message = str(caught.value)
    assert "has no pgvector extension" in message and "CREATE EXTENSION vector" in message
    assert "postgresql-NN-pgvector" in message and "\n" not in message
    with psycopg.connect(system) as db:  # nothing was created there
        assert db.execute("SELECT to_regclass('outcrop_kb.catalog')").fetchone()[0] is None
    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    code, _, err = run(capsys, "kb", "create", "x", "--url", system)
    assert code == 1 and "CREATE EXTENSION vector" in _one_clear_line(err)


def test_engine_and_url_mistakes_name_the_fix(gw: Gateway, capsys, monkeypatch, pgvector_url):
    with pytest.raises(InvalidRequestError, match="Unknown knowledge-base engine 'mysql'"):
        KnowledgeBase.create("x", gateway=gw, engine="mysql")
    with pytest.raises(InvalidRequestError, match="is for the postgres engine"):
        KnowledgeBase.create("x", gateway=gw, engine="sqlite", url=pgvector_url)
    with pytest.raises(UserError, match="postgres engine needs a database"):
        KnowledgeBase.create("x", gateway=gw, engine="postgres")
    with pytest.raises(InvalidRequestError, match=r"'db\.example/x' is not a PostgreSQL URL"):
        KnowledgeBase.create("x", gateway=gw, url="mysql://root:pw@db.example/x")
    KnowledgeBase.create("x", gateway=gw, url=pgvector_url)
    with pytest.raises(UserError, match="already exists"):
        KnowledgeBase.create("x", gateway=gw, engine="sqlite")  # names span the engines
    assert kb_names() == ["x"]
    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    code, _, err = run(capsys, "kb", "create", "y", "--engine", "postgres")
    assert code == 1 and "OUTCROP_DATABASE_URL" in _one_clear_line(err)
    code, _, err = run(capsys, "kb", "copy", "x", "y", "--to-url", "http://nope")
    assert code == 1 and "is not a PostgreSQL URL" in _one_clear_line(err)
    assert kb_names() == ["x"]


# -- connections that go away --------------------------------------------------------------


class Proxy:
    """A TCP proxy in front of the test server that a test can cut and restore."""

    def __init__(self, url: str):
        parts = conninfo_to_dict(url)
        host = str(parts.get("host") or "127.0.0.1")
        port = int(parts.get("port") or 5432)
        self.upstream = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        user = parts.get("user", "postgres") + (
            f":{parts['password']}" if parts.get("password") else ""
        )
        self.url = f"postgresql://{user}@127.0.0.1:{self.port}/{parts['dbname']}"
        self.sockets: list[socket.socket] = []
        self._serve()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            family, address = self.upstream
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(address)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets = []

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self._serve()


def test_a_lost_connection_is_retried_and_a_dead_database_fails_that_call_only(
    gw: Gateway, folder: Path, pgvector_url: str, capsys, monkeypatch
):
    from outcrop.cli._common import Ctx

    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    proxy = Proxy(pgvector_url)
    try:
        kb = KnowledgeBase.create("handbook", gateway=gw, url=proxy.url)
        kb.add(folder)
        before = _key(kb, kb.search("reset password", k=3))
        # The server ends every connection (a restart, a failover): the next call retries.
        with psycopg.connect(pgvector_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        assert ended >= 1
        assert _key(kb, kb.search("reset password", k=3)) == before
        # The network goes: that call fails with one clear line...
        proxy.cut()
        with pytest.raises(StoreUnavailableError, match=r"Lost the connection to the Postg"):
            kb.search("reset password", k=3)
        # (a new command finds it gone from the start)
        code, _, err = run(capsys, "kb", "search", "handbook", "reset password")
        line = _one_clear_line(err)
        assert (
            code == 1
            and f"Cannot reach the PostgreSQL database postgresql://postgres@127.0.0.1:{proxy.port}/"
            in line
        )
        # ...and the next one, once it is back, works.
        proxy.restore()
        assert _key(kb, kb.search("reset password", k=3)) == before
        assert kb.info()["documents"] == len(DOCS)  # nothing lost
    finally:
        close_pools()
        proxy.cut()


# -- docs ---------------------------------------------------------------------------------


def test_the_scale_out_example_runs(
    pgvector_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: Store
):
    text = (Path(__file__).resolve().parent.parent / "docs" / "scale-out.md").read_text()
    section = text[text.index("## Knowledge bases on PostgreSQL") :]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    docs = Path.cwd() / "docs"
    docs.mkdir()
    for name, body in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(body)
    monkeypatch.setenv("OUTCROP_DATABASE_URL", pgvector_url)
    namespace: dict[str, object] = {}
    exec(compile(block, "scale-out.md", "exec"), namespace)
    assert kb_names() == ["handbook", "handbook-local"]
    local = KnowledgeBase.open("handbook-local")
    assert local.engine == "sqlite" and local.info()["documents"] == len(DOCS)
