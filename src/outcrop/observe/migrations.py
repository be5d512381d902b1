"""The store's migrations: named, ordered, each with its SQLite and its PostgreSQL DDL.

Both engines apply the same list in the same order and record each name in
``_migrations``, so a database of either kind says which migrations it has.
The PostgreSQL bodies are the SQLite ones in PostgreSQL's types: DOUBLE
PRECISION for REAL, BOOLEAN for the 0/1 flags, JSONB for the trace's JSON
columns, and a ``seq`` identity column where SQLite orders rows by ``rowid``.

A new migration goes at the end with both bodies; an applied one never
changes (write another that alters it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration"]


@dataclass(frozen=True)
class Migration:
    """One schema change: its name, and its statements for each engine."""

    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        return self.postgres if dialect == "postgresql" else self.sqlite


_M001_TRACES = Migration(
    "001_traces",
    sqlite=(
        """
        CREATE TABLE traces (
            id TEXT PRIMARY KEY,
            parent_id TEXT,
            kind TEXT NOT NULL DEFAULT 'chat',
            started_at REAL NOT NULL,
            requested_model TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            stream INTEGER NOT NULL,
            status TEXT NOT NULL,
            finish_reason TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL,
            ttft_ms REAL,
            cost_usd REAL,
            error TEXT,
            attempts TEXT NOT NULL DEFAULT '[]',
            request TEXT NOT NULL,
            response TEXT
        )
        """,
        "CREATE INDEX traces_started ON traces(started_at)",
        "CREATE INDEX traces_model ON traces(model, started_at)",
    ),
    postgres=(
        """
        CREATE TABLE traces (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            id TEXT PRIMARY KEY,
            parent_id TEXT,
            kind TEXT NOT NULL DEFAULT 'chat',
            started_at DOUBLE PRECISION NOT NULL,
            requested_model TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            stream BOOLEAN NOT NULL,
            status TEXT NOT NULL,
            finish_reason TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            latency_ms DOUBLE PRECISION,
            ttft_ms DOUBLE PRECISION,
            cost_usd DOUBLE PRECISION,
            error TEXT,
            attempts JSONB NOT NULL DEFAULT '[]',
            request JSONB NOT NULL,
            response TEXT
        )
        """,
        "CREATE INDEX traces_started ON traces(started_at)",
        "CREATE INDEX traces_model ON traces(model, started_at)",
    ),
)

_M002_USAGE_ESTIMATED = Migration(
    "002_usage_estimated",
    sqlite=("ALTER TABLE traces ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0",),
    postgres=("ALTER TABLE traces ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT false",),
)

_M003_PROMPTS = Migration(
    "003_prompts",
    sqlite=(
        "ALTER TABLE traces ADD COLUMN prompt_name TEXT",
        "ALTER TABLE traces ADD COLUMN prompt_version INTEGER",
        "CREATE INDEX traces_parent ON traces(parent_id)",
        """
        CREATE TABLE prompt_versions (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            hash TEXT NOT NULL,
            content TEXT NOT NULL,
            source TEXT,
            path TEXT,
            created_at REAL NOT NULL,
            author TEXT,
            note TEXT,
            PRIMARY KEY (name, version),
            UNIQUE (name, hash)
        )
        """,
        """
        CREATE TABLE prompt_labels (
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            moved_at REAL NOT NULL,
            PRIMARY KEY (name, label)
        )
        """,
        """
        CREATE TABLE prompt_label_moves (
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            previous INTEGER,
            moved_at REAL NOT NULL
        )
        """,
    ),
    postgres=(
        "ALTER TABLE traces ADD COLUMN prompt_name TEXT",
        "ALTER TABLE traces ADD COLUMN prompt_version INTEGER",
        "CREATE INDEX traces_parent ON traces(parent_id)",
        """
        CREATE TABLE prompt_versions (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            hash TEXT NOT NULL,
            content TEXT NOT NULL,
            source TEXT,
            path TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            author TEXT,
            note TEXT,
            PRIMARY KEY (name, version),
            UNIQUE (name, hash)
        )
        """,
        """
        CREATE TABLE prompt_labels (
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            moved_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (name, label)
        )
        """,
        """
        CREATE TABLE prompt_label_moves (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            previous INTEGER,
            moved_at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX prompt_label_moves_label ON prompt_label_moves(name, label, moved_at)",
    ),
)

_M004_LABEL_MOVE_KIND = Migration(
    "004_label_move_kind",
    sqlite=("ALTER TABLE prompt_label_moves ADD COLUMN kind TEXT NOT NULL DEFAULT 'promote'",),
    postgres=("ALTER TABLE prompt_label_moves ADD COLUMN kind TEXT NOT NULL DEFAULT 'promote'",),
)

_M005_EVALS = Migration(
    "005_evals",
    sqlite=(
        """
        CREATE TABLE eval_runs (
            id TEXT PRIMARY KEY,
            suite TEXT NOT NULL,
            suite_hash TEXT NOT NULL,
            suite_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            total INTEGER NOT NULL,
            note TEXT
        )
        """,
        """
        CREATE TABLE eval_results (
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            prompt TEXT NOT NULL,
            model TEXT NOT NULL,
            case_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            data TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, prompt, model, case_id, repeat)
        )
        """,
        "CREATE TABLE eval_cache (key TEXT PRIMARY KEY, data TEXT NOT NULL, "
        "created_at REAL NOT NULL)",
    ),
    postgres=(
        """
        CREATE TABLE eval_runs (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            id TEXT PRIMARY KEY,
            suite TEXT NOT NULL,
            suite_hash TEXT NOT NULL,
            suite_json TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION,
            status TEXT NOT NULL,
            total INTEGER NOT NULL,
            note TEXT
        )
        """,
        "CREATE INDEX eval_runs_suite ON eval_runs(suite, created_at)",
        """
        CREATE TABLE eval_results (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            prompt TEXT NOT NULL,
            model TEXT NOT NULL,
            case_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            data TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (run_id, prompt, model, case_id, repeat)
        )
        """,
        "CREATE TABLE eval_cache (key TEXT PRIMARY KEY, data TEXT NOT NULL, "
        "created_at DOUBLE PRECISION NOT NULL)",
    ),
)

_M006_API_KEYS = Migration(
    "006_api_keys",
    sqlite=(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            scopes TEXT NOT NULL,
            limits TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )
        """,
        "ALTER TABLE traces ADD COLUMN api_key TEXT",
        "CREATE INDEX traces_api_key ON traces(api_key, started_at)",
    ),
    postgres=(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            scopes TEXT NOT NULL,
            limits TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )
        """,
        "ALTER TABLE traces ADD COLUMN api_key TEXT",
        "CREATE INDEX traces_api_key ON traces(api_key, started_at)",
    ),
)

_M007_GUARDRAILS = Migration(
    "007_guardrails",
    sqlite=("ALTER TABLE traces ADD COLUMN guardrails TEXT NOT NULL DEFAULT '[]'",),
    postgres=("ALTER TABLE traces ADD COLUMN guardrails JSONB NOT NULL DEFAULT '[]'",),
)

_M008_FEEDBACK = Migration(
    "008_feedback",
    sqlite=(
        """
        CREATE TABLE feedback (
            trace_id TEXT PRIMARY KEY REFERENCES traces(id),
            rating TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )
        """,
    ),
    postgres=(
        """
        CREATE TABLE feedback (
            trace_id TEXT PRIMARY KEY REFERENCES traces(id),
            rating TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL
        )
        """,
    ),
)

# Live traffic scored by online evaluation (outcrop.observe.online), and the alerts its rules
# raise; the partial unique index keeps one open alert per rule across every replica.
_M009_ONLINE_EVAL = Migration(
    "009_online_eval",
    sqlite=(
        """
        CREATE TABLE online_scores (
            trace_id TEXT NOT NULL,
            metric TEXT NOT NULL,
            score REAL,
            reason TEXT,
            scored_at REAL NOT NULL,
            model TEXT,
            prompt_name TEXT,
            prompt_version INTEGER,
            api_key TEXT,
            PRIMARY KEY (trace_id, metric)
        )
        """,
        "CREATE INDEX online_scores_metric ON online_scores(metric, scored_at)",
        "CREATE INDEX online_scores_time ON online_scores(scored_at)",
        """
        CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            metric TEXT NOT NULL,
            opened_at REAL NOT NULL,
            closed_at REAL,
            value REAL,
            threshold REAL NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            closed_value REAL
        )
        """,
        "CREATE UNIQUE INDEX alerts_open ON alerts(rule) WHERE closed_at IS NULL",
        "CREATE INDEX alerts_opened ON alerts(opened_at)",
    ),
    postgres=(
        """
        CREATE TABLE online_scores (
            trace_id TEXT NOT NULL,
            metric TEXT NOT NULL,
            score DOUBLE PRECISION,
            reason TEXT,
            scored_at DOUBLE PRECISION NOT NULL,
            model TEXT,
            prompt_name TEXT,
            prompt_version INTEGER,
            api_key TEXT,
            PRIMARY KEY (trace_id, metric)
        )
        """,
        "CREATE INDEX online_scores_metric ON online_scores(metric, scored_at)",
        "CREATE INDEX online_scores_time ON online_scores(scored_at)",
        """
        CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            metric TEXT NOT NULL,
            opened_at DOUBLE PRECISION NOT NULL,
            closed_at DOUBLE PRECISION,
            value DOUBLE PRECISION,
            threshold DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            closed_value DOUBLE PRECISION
        )
        """,
        "CREATE UNIQUE INDEX alerts_open ON alerts(rule) WHERE closed_at IS NULL",
        "CREATE INDEX alerts_opened ON alerts(opened_at)",
    ),
)

# Named and ordered; each applied once and recorded in _migrations.
MIGRATIONS: list[Migration] = [
    _M001_TRACES,
    _M002_USAGE_ESTIMATED,
    _M003_PROMPTS,
    _M004_LABEL_MOVE_KIND,
    _M005_EVALS,
    _M006_API_KEYS,
    _M007_GUARDRAILS,
    _M008_FEEDBACK,
    _M009_ONLINE_EVAL,
]
