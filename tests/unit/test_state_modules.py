"""The shape of tiergate.state: one protocol, implementations that match it, parts without cycles or stubs."""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path

import pytest

from tiergate.config.guardrails import OutageConfig
from tiergate.guardrails.outages import GuardedState, Outages
from tiergate.state.base import SharedState
from tiergate.state.memory import MemoryState
from tiergate.state.redis_state import RedisState

STATE = Path(__file__).resolve().parents[2] / "src" / "tiergate" / "state"
MODULES = {f"tiergate.state.{p.stem}": p for p in sorted(STATE.glob("*.py")) if p.stem != "__init__"}
PROTOCOL = [n for n, f in vars(SharedState).items() if callable(f) and not n.startswith("_")]


def _imports(path: Path) -> set[str]:
    """tiergate.state modules this one imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n in MODULES}
    return out


def _is_stub(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of only ``...`` (after a docstring): a method some other class is expected to provide."""
    body = [
        s
        for s in fn.body
        if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str))
    ]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and body[0].value.value is Ellipsis
    )


def test_state_modules_import_each_other_without_cycles():
    graph = {m: _imports(p) for m, p in MODULES.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m) :] + [m]))
        if m not in done:
            for dep in sorted(graph[m]):
                visit(dep, path + [m])
            done.add(m)

    for m in graph:
        visit(m, [])
    assert graph["tiergate.state.base"] == set()  # the protocol depends on no implementation


@pytest.mark.parametrize("module", sorted(MODULES))
def test_state_modules_stay_small_and_declare_no_stub_methods(module):
    source = MODULES[module].read_text()
    assert len(source.splitlines()) <= 500, module
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
        if any(isinstance(b, ast.Name) and b.id == "Protocol" for b in cls.bases):
            continue
        for fn in (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            assert not _is_stub(fn), f"{module}.{cls.name}.{fn.name} is a stub: pass a part what it needs instead"


def test_protocol_includes_close():
    assert "close" in PROTOCOL and inspect.iscoroutinefunction(SharedState.close)


@pytest.mark.parametrize("impl", [MemoryState, RedisState], ids=lambda c: c.__name__)
def test_implementations_match_the_protocol_exactly(impl):
    for name in PROTOCOL:
        want, got = getattr(SharedState, name), getattr(impl, name)
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), name
        assert inspect.signature(got) == inspect.signature(want), name


def test_guarded_state_has_every_protocol_method_of_its_own():
    for name in PROTOCOL:
        got = inspect.getattr_static(GuardedState, name)  # not through __getattr__ to the wrapped state
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(getattr(SharedState, name)), name


def test_memory_close_is_a_no_op_and_guarded_close_closes_the_wrapped_state():
    class Inner(MemoryState):
        closed = 0

        async def close(self) -> None:
            self.closed += 1

    async def body() -> None:
        mem = MemoryState()
        await mem.set_flag("x", "1")
        await mem.close()
        await mem.close()
        assert await mem.flag("x") == "1"
        inner = Inner()
        guarded = GuardedState(inner, Outages(OutageConfig()))
        await guarded.close()
        assert inner.closed == 1

    asyncio.run(body())


def test_redis_state_close_before_start_is_harmless():
    async def body() -> None:
        st = RedisState("redis://127.0.0.1:1/0")
        await st.close()
        with pytest.raises(RuntimeError, match="not started"):
            await st.budget_usage("k")

    asyncio.run(body())
