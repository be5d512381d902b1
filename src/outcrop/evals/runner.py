"""Run a suite: every case × prompt × model × repeat, scored, stored, resumable.

The runner checks the whole plan before the first call (prompts, models,
metrics, variables), then runs the calls concurrently — one at a time per local
model (llama.cpp uses every core already), up to ``concurrency`` at once per
remote model. Each result is committed to outcrop's database as it finishes,
so a run stopped by Ctrl-C or a crash resumes where it stopped
(``outcrop eval run --resume RUN``) without calling a model again for a case
it finished. Identical calls (same model, messages, options and seed) are
answered from a cache unless ``cache=False``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, OutcropError, ProviderError, UserError
from ..prompts.prompt import Prompt
from ..types import ChatRequest
from .metrics import Metric, MetricContext, Sample, build_metric
from .suite import Case, Suite

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["EvalRun", "Job", "ResultRow", "Runner", "load_run"]


@dataclass
class Job:
    prompt_ref: str
    prompt: Prompt
    model: str
    case: Case
    repeat: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.prompt_ref, self.model, str(self.case.id), self.repeat)


@dataclass
class ResultRow:
    """One scored answer, as stored."""

    prompt: str
    model: str
    case_id: str
    repeat: int
    status: str  # "ok" | "error"
    output: str = ""
    error: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    judge_invalid: int = 0
    latency_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    cached: bool = False
    trace_id: str | None = None
    question: str = ""
    expected: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    contexts: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cell(self) -> str:
        return f"{self.prompt} × {self.model}"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, text: str) -> ResultRow:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a result row is a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        row = cls(**known)
        scores = row.scores
        if not isinstance(scores, dict) or not all(
            isinstance(v, int | float) or v is None for v in scores.values()
        ):
            raise ValueError("scores must map metric names to numbers")
        if not isinstance(row.reasons, dict) or not isinstance(row.output, str):
            raise ValueError("reasons must be a mapping and output a string")
        for name in ("latency_ms", "cost_usd"):
            value = getattr(row, name)
            if value is not None and not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
        return row


@dataclass
class EvalRun:
    """A stored run: its suite, its rows, and rows that could not be read."""

    id: str
    suite: dict[str, Any]
    status: str
    created_at: float
    finished_at: float | None
    total: int
    rows: list[ResultRow]
    corrupt: list[str]  # "case 3 (prompt × model, repeat 0): why"

    @property
    def name(self) -> str:
        return str(self.suite.get("name", "?"))

    def metric_directions(self) -> dict[str, bool]:
        """metric → higher is better (from the suite's metrics)."""
        out: dict[str, bool] = {}
        for m in self.suite.get("metrics", []):
            spec = {"name": m} if isinstance(m, str) else dict(m)
            name = str(spec.get("label") or spec["name"])
            out[name] = str(spec["name"]) not in ("latency_ms", "tokens", "cost")
        return out

    def thresholds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.suite.get("metrics", []):
            if isinstance(m, dict) and m.get("threshold") is not None:
                out[str(m.get("label") or m["name"])] = float(m["threshold"])
        return out


def load_run(gateway: Gateway, run_id: str) -> EvalRun:
    """A stored run by id or id prefix; unreadable rows are listed, the rest kept."""
    store = gateway.store
    found = store.eval_run(run_id)
    if found is None:
        recent = ", ".join(r["id"][:8] for r in store.eval_runs(limit=5))
        raise UserError(
            f"No eval run {run_id!r}. Recent runs: {recent or 'none yet'} (outcrop eval list)."
        )
    rows: list[ResultRow] = []
    corrupt: list[str] = []
    for raw in store.eval_results(found["id"]):
        try:
            rows.append(ResultRow.from_json(raw["data"]))
        except (ValueError, TypeError) as exc:
            corrupt.append(
                f"case {raw['case_id']} ({raw['prompt']} × {raw['model']}, repeat "
                f"{raw['repeat']}): unreadable ({exc.__class__.__name__})"
            )
    try:
        suite = json.loads(found["suite_json"])
    except json.JSONDecodeError:
        suite = {"name": found["suite"], "metrics": []}
    return EvalRun(
        id=found["id"],
        suite=suite,
        status=found["status"],
        created_at=found["created_at"],
        finished_at=found["finished_at"],
        total=found["total"],
        rows=rows,
        corrupt=corrupt,
    )


Progress = Callable[[int, int, ResultRow], None]


class Runner:
    """Plan, run and store a suite. ``run()`` for scripts; ``arun()`` inside async code."""

    def __init__(
        self,
        suite: Suite,
        *,
        gateway: Gateway | None = None,
        models: Sequence[str] | None = None,
        limit: int | None = None,
        repeats: int | None = None,
        cache: bool = True,
        concurrency: int | None = None,
        progress: Progress | None = None,
    ):
        if gateway is None:
            from ..gateway import Gateway

            gateway = Gateway()
        self.gateway = gateway
        self.suite = suite
        self.models = list(models or suite.models) or [gateway.settings.default_model]
        self.limit = limit
        self.repeats = repeats or suite.repeats
        self.cache = cache
        self.concurrency = concurrency or suite.concurrency
        self.progress = progress
        self.metrics: list[Metric] = []
        self.jobs: list[Job] = []
        self.run_id: str | None = None  # set when a run starts (or resumes)
        self._kb: Any = None

    # -- planning -----------------------------------------------------------

    def plan(self) -> list[Job]:
        """Check everything a run needs and list its calls; raises before any model call."""
        suite = self.suite
        self.metrics = [build_metric(spec) for spec in suite.metric_specs()]
        for model in self.models:
            self.gateway.resolve(model)  # unknown ids fail here, with "Did you mean …?"
        if suite.judge_model:
            self.gateway.resolve(suite.judge_model)
        for spec in suite.metric_specs():
            if spec.model:
                self.gateway.resolve(spec.model)
        cases = suite.load_cases()
        if self.limit is not None:
            cases = cases[: self.limit]
        for metric in self.metrics:
            if metric.needs is None:
                continue
            for case in cases:
                have = {
                    "expected": case.expected_list(),
                    "contexts": case.contexts,
                    "tools": case.tools,
                }[metric.needs]
                if not have and metric.kind != "tool_calls":  # no calls expected is valid
                    raise InvalidRequestError(
                        f"metric {metric.name} needs {metric.needs!r} in every case; case "
                        f"{case.id} has none",
                        field="metrics",
                    )
        if suite.rag is not None:
            from ..rag import KnowledgeBase

            self._kb = KnowledgeBase.open(suite.rag.kb, gateway=self.gateway)
        if suite.agent is not None:
            self._agent_tools()  # unknown tools and knowledge bases fail here
        prompts = self._prompts()
        jobs: list[Job] = []
        for ref, prompt in prompts:
            for case in cases:
                values = self._values(case, probe=True)
                try:
                    prompt.messages(values)
                except OutcropError as exc:
                    raise InvalidRequestError(
                        f"prompt {ref} cannot render case {case.id}: {exc}", field="prompts"
                    ) from None
            for model in self.models:
                for case in cases:
                    for repeat in range(self.repeats):
                        jobs.append(Job(ref, prompt, model, case, repeat))
        self.jobs = jobs
        return jobs

    def _prompts(self) -> list[tuple[str, Prompt]]:
        suite = self.suite
        if not suite.prompts:
            if suite.rag is not None:
                query = "{{ " + suite.rag.query + " }}"
                default = Prompt(
                    instructions="Answer from the context only. If it does not hold the answer, "
                    "say you do not know.",
                    context="{{ context }}",
                    query=query,
                )
                return [("rag-default", default)]
            return [("input", Prompt(query="{{ input }}"))]
        from ..prompts.versions import PromptRegistry

        registry = PromptRegistry(self.gateway.store)
        out: list[tuple[str, Prompt]] = []
        for item in suite.prompts:
            if isinstance(item, Prompt):
                ref = f"{item.name or 'inline'}#{item.content_hash()[:8]}"
                out.append((ref, item))
                continue
            path = suite.folder / item if suite.folder and "/" in item else None
            target = str(path) if path is not None and path.exists() else item
            version = registry.resolve(target)
            out.append((version.ref, version.prompt))
        refs = [r for r, _ in out]
        if len(refs) != len(set(refs)):
            raise InvalidRequestError("the suite lists one prompt version twice", field="prompts")
        return out

    def _values(self, case: Case, *, probe: bool = False) -> dict[str, Any]:
        values = case.variables()
        if self.suite.rag is not None:
            values.setdefault("context", "(retrieved passages)" if probe else "")
            if self.suite.rag.query not in values:
                raise InvalidRequestError(
                    f"case {case.id} has no variable {self.suite.rag.query!r} (the question the "
                    "knowledge base is searched with; set rag.query to name another)",
                    field="cases",
                )
        return values

    # -- running ------------------------------------------------------------

    def run(self, resume: str | None = None) -> EvalRun:
        """Run (or resume) the suite; returns the stored run."""
        return asyncio.run(self.arun(resume))

    async def arun(self, resume: str | None = None) -> EvalRun:
        if not self.jobs:
            self.plan()
        store = self.gateway.store
        suite_json = self.suite.model_dump_json(by_alias=True)
        plan_hash = self._plan_hash(suite_json)
        if resume is not None:
            previous = load_run(self.gateway, resume)
            if previous.name != self.suite.name:
                raise UserError(
                    f"run {previous.id[:8]} is of suite {previous.name!r}, not {self.suite.name!r}"
                )
            if store.eval_run(previous.id)["suite_hash"] != plan_hash:  # type: ignore[index]
                raise UserError(
                    f"run {previous.id[:8]} was made from a different plan: the suite, its cases, "
                    "the models, --limit or --repeats changed since. Resume with the same ones, "
                    "or start a new run."
                )
            run_id = previous.id
            done = {
                (r.prompt, r.model, r.case_id, r.repeat) for r in previous.rows if r.status == "ok"
            }
            store.set_eval_run_status(run_id, "running", None)
        else:
            run_id = secrets.token_hex(8)  # random, so its first 8 characters name it
            done = set()
            store.add_eval_run(
                run_id=run_id,
                suite=self.suite.name,
                suite_hash=plan_hash,
                suite_json=suite_json,
                total=len(self.jobs),
                created_at=time.time(),
            )
        self.run_id = run_id
        todo = [j for j in self.jobs if j.key not in done]
        finished = len(self.jobs) - len(todo)
        semaphores: dict[str, asyncio.Semaphore] = {}
        for model in self.models:
            local = self.gateway.resolve(model).provider.name == "local"
            semaphores[model] = asyncio.Semaphore(1 if local else self.concurrency)

        async def one(job: Job) -> None:
            nonlocal finished
            async with semaphores[job.model]:
                row = await asyncio.to_thread(self._run_job, job, run_id)
            store.add_eval_result(
                run_id, job.prompt_ref, job.model, str(job.case.id), job.repeat, row.to_json()
            )
            finished += 1
            if self.progress is not None:
                self.progress(finished, len(self.jobs), row)

        status = "interrupted"
        try:
            await asyncio.gather(*(one(j) for j in todo))
            status = "done"
        finally:
            store.set_eval_run_status(run_id, status, time.time())
        return load_run(self.gateway, run_id)

    def _plan_hash(self, suite_json: str) -> str:
        """What a resumed run must match: the suite, its cases, models, limit and repeats."""
        cases: dict[str, Any] = {}
        for job in self.jobs:
            cases.setdefault(str(job.case.id), job.case.model_dump(mode="json"))
        suite = json.loads(suite_json)
        suite.pop("concurrency", None)  # how fast, not what: a resume may change it
        plan = json.dumps(
            {
                "suite": suite,
                "cases": cases,
                "models": self.models,
                "repeats": self.repeats,
                "prompts": sorted({j.prompt_ref for j in self.jobs}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(plan.encode("utf-8")).hexdigest()

    def _cache_key(self, request: ChatRequest) -> str:
        resolved = self.gateway.resolve(request.model)
        payload = request.model_dump(mode="json", exclude_none=True)
        payload["model"] = resolved.id
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _run_job(self, job: Job, run_id: str) -> ResultRow:
        case = job.case
        row = ResultRow(
            prompt=job.prompt_ref,
            model=job.model,
            case_id=str(case.id),
            repeat=job.repeat,
            status="ok",
            expected=case.expected_list(),
            tags=case.tags,
        )
        try:
            sample = self._answer(job, row)
        except (ProviderError, UserError) as exc:
            row.status = "error"
            row.error = f"{exc.__class__.__name__}: {exc}"
            return row
        ctx = MetricContext(
            self.gateway, self.suite.judge_model, seed=self.suite.seed, parent_id=row.trace_id
        )
        for metric in self.metrics:
            try:
                score = metric.score(sample, ctx)
            except (ProviderError, UserError) as exc:
                row.scores[metric.name] = None
                row.reasons[metric.name] = f"could not score: {exc}"
                continue
            row.scores[metric.name] = score.value
            if score.reason:
                row.reasons[metric.name] = score.reason
            if score.judge_valid is False:
                row.judge_invalid += 1
        return row

    def _seed(self, repeat: int) -> int:
        base = self.suite.options.seed if self.suite.options.seed is not None else self.suite.seed
        return base + repeat

    def _answer(self, job: Job, row: ResultRow) -> Sample:
        case = job.case
        values = self._values(case)
        if self.suite.rag is not None:
            hits = self._kb.search(
                str(values[self.suite.rag.query]), k=self.suite.rag.k, mode=self.suite.rag.mode
            )
            row.contexts = [
                {"source": h.chunk.source, "text": h.chunk.text, "score": h.score} for h in hits
            ]
            values["context"] = "\n\n".join(
                f"[{i}] {c['text']}" for i, c in enumerate(row.contexts, start=1)
            )
        if self.suite.agent is not None:
            return self._run_agent(job, row, values)
        options = self.suite.options.model_dump(exclude_none=True)
        options["seed"] = self._seed(job.repeat)
        request = job.prompt.request(values, model=job.model, **options)
        row.question = request.messages[-1].text
        key = self._cache_key(request) if self.cache else None
        cached = self.gateway.store.cache_get(key) if key else None
        if cached is not None:
            data = json.loads(cached)
            row.cached = True
        else:
            from ..gateway import TraceInfo

            name, _, version = job.prompt_ref.partition("@")
            trace = TraceInfo(
                prompt_name=name if version.isdigit() else None,
                prompt_version=int(version) if version.isdigit() else None,
                kind="eval",
            )
            # The model the suite names, and no fallback: a fallback's answer scored as
            # this model's would be wrong, and cached it would hide the failure.
            response = self.gateway.chat(request, trace=trace, fallbacks=False)
            data = {
                "text": response.text,
                "latency_ms": response.latency_ms,
                "input_tokens": response.usage.input_tokens,
                "output_tokens": response.usage.output_tokens,
                "cost_usd": response.cost_usd,
                "trace_id": response.id,
            }
            if key:
                self.gateway.store.cache_put(key, json.dumps(data))
        row.output = str(data["text"])
        row.latency_ms = data.get("latency_ms")
        row.input_tokens = int(data.get("input_tokens") or 0)
        row.output_tokens = int(data.get("output_tokens") or 0)
        row.cost_usd = 0.0 if row.cached else data.get("cost_usd")  # a cache hit costs nothing
        row.trace_id = data.get("trace_id")
        return self._sample(case, row)

    def _agent_tools(self) -> list[Any]:
        from ..agents.builtin import calculator, current_datetime, kb_search_tool

        spec = self.suite.agent
        assert spec is not None
        builtins = {"calculator": calculator, "datetime": current_datetime}
        tools = []
        for name in spec.tools:
            if name not in builtins:
                raise InvalidRequestError(
                    f"agent tool {name!r} is not built in; tools: {', '.join(builtins)} "
                    "(and agent.kb: NAME for a knowledge base's search)",
                    field="agent.tools",
                )
            tools.append(builtins[name])
        if spec.kb:
            tools.append(kb_search_tool(spec.kb, gateway=self.gateway))
        return tools

    def _run_agent(self, job: Job, row: ResultRow, values: dict[str, Any]) -> Sample:
        from ..agents import Agent

        spec = self.suite.agent
        assert spec is not None
        tools = self._agent_tools()
        agent = Agent(
            job.model,
            tools,
            spec.instructions,
            max_steps=spec.max_steps,
            gateway=self.gateway,
        )
        task = job.prompt.messages(values)[-1].text
        row.question = task
        t0 = time.perf_counter()
        result = agent.run(task)
        row.latency_ms = (time.perf_counter() - t0) * 1000
        row.output = result.text if result.output is not None else ""
        row.input_tokens = result.usage.input_tokens
        row.output_tokens = result.usage.output_tokens
        row.cost_usd = result.cost_usd
        row.trace_id = result.trace_id
        row.tool_calls = [
            {"name": s.tool, "arguments": s.arguments or {}, "ok": s.ok}
            for s in result.steps
            if s.kind == "tool"
        ]
        if result.status != "done":
            row.reasons["agent"] = f"the agent stopped: {result.status}"
        return self._sample(job.case, row)

    @staticmethod
    def _sample(case: Case, row: ResultRow) -> Sample:
        return Sample(
            case=case,
            output=row.output,
            question=row.question,
            latency_ms=row.latency_ms,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_usd=row.cost_usd,
            contexts=row.contexts,
            tool_calls=row.tool_calls,
        )
