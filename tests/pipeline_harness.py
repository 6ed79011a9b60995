"""A whole request pipeline over an in-memory upstream: no sockets, no processes.

Four OpenAI-protocol deployments on hosts named after them: two free local
ones at tier 0, a priced one at tier 1 and a dearer one at tier 2. Each
host answers from its own script (a list of MemoryTransport answers,
taken one per request), else with a documented chat completion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tiergate.adapters.memory_transport import (
    Answer,
    MemoryTransport,
    Reply,
    SentRequest,
)
from tiergate.adapters.registry import protocol_adapters
from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.config.schema import TiergateConfig
from tiergate.core.catalog import Catalog
from tiergate.core.money import counter_key
from tiergate.core.types import Identity, RequestFeatures, UsageRecord
from tiergate.core.windows import window_key
from tiergate.guardrails.budgets import BudgetGuard
from tiergate.guardrails.limits import LimitGuard
from tiergate.guardrails.sessions import SessionTracker
from tiergate.observability.metrics import Metrics
from tiergate.pipeline.answer import Answer as PipelineAnswer
from tiergate.pipeline.service import PipelineRequest, RequestPipeline
from tiergate.router.executor import Executor
from tiergate.state.memory import MemoryState

DEPLOYMENTS = ("local-a", "local-b", "cheap", "frontier")

# OpenAI's documented chat completion object and streaming chunks (API reference, "The chat completion object").
COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, how may I assist you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}


def chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


STREAM = [
    chunk("", role="assistant"),
    chunk("Hello"),
    chunk("!"),
    chunk(finish="stop"),
    {**chunk(), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    "[DONE]",
]


def raw_config(**extra: Any) -> dict[str, Any]:
    providers = {
        n: {
            "api": "openai-chat",
            "base_url": f"http://{n}.test/v1",
            "local": n.startswith("local"),
            "api_key": None if n.startswith("local") else "sk-test",
        }
        for n in DEPLOYMENTS
    }
    prices = {"cheap": (1.0, 2.0), "frontier": (10.0, 30.0)}
    deployments = [
        {
            "name": n,
            "provider": n,
            "model": f"model-{n}",
            "tier": {"cheap": 1, "frontier": 2}.get(n, 0),
            "context_window": 32000,
            "price": {"input_per_mtok": prices.get(n, (0, 0))[0], "output_per_mtok": prices.get(n, (0, 0))[1]},
        }
        for n in DEPLOYMENTS
    ]
    raw: dict[str, Any] = {
        "providers": providers,
        "deployments": deployments,
        "routing": {
            "num_retries": 2,
            "retry_backoff_s": 0.25,
            "max_retry_after_s": 10,
            "breaker_failures": 3,
            "breaker_cooldown_s": 30,
        },
        "auth": {"required": False},
    }
    for k, v in extra.items():
        raw[k] = {**raw[k], **v} if isinstance(raw.get(k), dict) and isinstance(v, dict) else v
    return raw


class ListLedger:
    """A ledger that keeps its records in a list (only ``record`` is on the request path)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def record(self, rec: Any) -> None:
        self.records.append(rec)

    def usage(self, kind: str) -> list[UsageRecord]:
        return [r for r in self.records if isinstance(r, UsageRecord) and r.kind == kind]


@dataclass
class Harness:
    cfg: TiergateConfig
    catalog: Catalog
    transport: MemoryTransport
    state: MemoryState
    ledger: ListLedger
    pipeline: RequestPipeline
    budgets: BudgetGuard
    clock: list[float]
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    sleeps: list[float] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # the host of every upstream request, in order

    def script(self, host: str, *answers: Answer) -> None:
        self.scripts.setdefault(host, []).extend(answers)

    async def ask(
        self,
        *,
        model: str = "auto",
        stream: bool = False,
        max_tokens: int | None = None,
        key: str = "k",
        agent: str | None = None,
        local_only: bool = False,
        protocol: str = "openai-chat",
    ) -> tuple[PipelineAnswer, int]:
        """One request through the pipeline, consumed like a client would; (answer, final status)."""
        ident = Identity(key_name=key, agent=agent, local_only=local_only)
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello"}]}
        if protocol == "openai-embeddings":
            body = {"model": model, "input": "The food was delicious and the waiter..."}
        if stream:
            body["stream"] = True
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        features = RequestFeatures(
            model=model, prompt_tokens_est=40, max_tokens=max_tokens, stream=stream, local_only=local_only
        )
        req = PipelineRequest(
            request_id=f"req-{len(self.ledger.records)}",
            identity=ident,
            features=features,
            body=body,
            protocol=protocol,
            started=time.perf_counter(),
        )
        answer = await self.pipeline.open(req)
        if not stream:
            await answer.finish(status=200)
            return answer, 200
        s = answer.stream
        async for _ in s.rest:
            pass
        status = 502 if s.status.error is not None else 200
        await answer.finish(status=status, ttft_ms=1.0, error=s.status.error)
        return answer, status

    async def reserved_total(self) -> float:
        """USD held by reservations across every configured budget's current counters."""
        total = 0.0
        for key in self._budget_keys():
            _, reserved, _ = await self.state.budget_usage(key)
            total += reserved
        return total

    async def spent_total(self) -> float:
        total = 0.0
        for key in self._budget_keys():
            spent, _, _ = await self.state.budget_usage(key)
            total += spent
        return total

    def _budget_keys(self) -> list[str]:
        keys = []
        for b in self.cfg.budgets:
            wk = window_key(b.window, self.clock[0], self.cfg.timezone)
            values = ["*"] if b.scope == "global" else list(DEPLOYMENTS) if b.scope == "deployment" else ["k"]
            keys += [counter_key(b, wk, v) for v in values]
        return keys


def build(raw: dict[str, Any] | None = None) -> Harness:
    cfg = config_from_dict(raw or raw_config(), env={})
    catalog = build_catalog(cfg)
    state = MemoryState()
    ledger = ListLedger()
    metrics = Metrics()
    clock = [1_780_000_000.0]
    h: Harness

    def handler(request: SentRequest) -> Answer:
        host = urlsplit(request.url).hostname or ""
        name = host.removesuffix(".test")
        h.seen.append(name)
        script = h.scripts.get(name)
        if script:
            answer = script.pop(0)
            # a callable answers per request (an async one when it must wait for something)
            return answer() if callable(answer) and not isinstance(answer, BaseException) else answer
        if request.json.get("stream"):
            return Reply.sse(STREAM)
        return Reply.json(COMPLETION)

    transport = MemoryTransport(handler)
    adapters = protocol_adapters(transport)

    async def no_sleep(seconds: float) -> None:
        h.sleeps.append(seconds)

    executor = Executor(
        catalog=catalog,
        routing=cfg.routing,
        state=state,
        ledger=ledger,
        metrics=metrics,
        adapters=adapters,
        clock=lambda: clock[0],
        sleep=no_sleep,
    )
    budgets = BudgetGuard(cfg.budgets, catalog=catalog, state=state, tz=cfg.timezone, clock=lambda: clock[0])
    sessions = SessionTracker(cfg.guardian, ledger=ledger, clock=lambda: clock[0])  # type: ignore[arg-type]
    limits = LimitGuard(cfg.limits, state=state, clock=lambda: clock[0]) if cfg.limits else None
    pipeline = RequestPipeline(
        executor=executor,
        budgets=budgets,
        sessions=sessions,
        limits=limits,
        ledger=ledger,
        metrics=metrics,  # type: ignore[arg-type]
        request_timeout_s=cfg.routing.request_timeout_s,
    )
    h = Harness(
        cfg=cfg,
        catalog=catalog,
        transport=transport,
        state=state,
        ledger=ledger,
        pipeline=pipeline,
        budgets=budgets,
        clock=clock,
    )
    return h
