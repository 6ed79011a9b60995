"""The package layout is the architecture: which package may import which, no cycles, a pure core.

Read from the source (module-level and function-level imports alike, not
``if TYPE_CHECKING:`` blocks), and checked in a fresh interpreter for what
importing the core and the policy actually loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tiergate"

DOC = SRC.parents[1] / "docs" / "architecture.md"
PACKAGES = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def allowed_imports() -> dict[str, set[str]]:
    """package -> the tiergate packages it may import, from the table in docs/architecture.md."""
    out: dict[str, set[str]] = {"background": set()}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`") or not cells[0].endswith("/`"):
            continue
        pkg, deps = cells[0].strip("`/"), cells[2]
        if deps == "nothing":
            out[pkg] = set()
        elif deps == "anything below":
            out[pkg] = (set(PACKAGES) | {"background"}) - {pkg, "standins"}
        else:
            out[pkg] = {d.strip() for d in deps.split(",")}
    return out


ALLOWED = allowed_imports()
HEAVY = {"aiohttp", "redis", "psycopg", "sqlite3", "socket", "subprocess", "yaml", "asyncio", "pydantic"}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _runtime_imports(path: Path) -> set[str]:
    """tiergate packages a module imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if (
                parts[0] == "tiergate"
                and len(parts) > 1
                and (SRC / parts[1]).exists()
                or (parts[0] == "tiergate" and len(parts) > 1 and (SRC / f"{parts[1]}.py").exists())
            ):
                found.add(parts[1])
    return found


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        pkg = _package(path)
        if pkg in ("__init__", "standins"):
            continue
        g.setdefault(pkg, set()).update(_runtime_imports(path) - {pkg})
    return g


def test_the_architecture_doc_names_every_package():
    assert set(PACKAGES) - {"standins"} <= set(ALLOWED), "a package is missing from docs/architecture.md's table"


def test_each_package_imports_only_what_its_layer_allows():
    wrong = {
        pkg: sorted(deps - ALLOWED[pkg]) for pkg, deps in _graph().items() if pkg in ALLOWED and deps - ALLOWED[pkg]
    }
    assert not wrong, f"imports across layers: {wrong}"


def test_there_are_no_import_cycles_between_packages():
    g = {k: v & set(ALLOWED) for k, v in _graph().items() if k in ALLOWED}
    seen: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        seen[n] = 1
        for m in g.get(n, ()):
            if seen.get(m) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, n, m])}")
            if m not in seen:
                visit(m, [*stack, n])
        seen[n] = 2

    for n in g:
        if n not in seen:
            visit(n, [])


@pytest.mark.parametrize(
    "module",
    [
        "tiergate.core.errors",
        "tiergate.core.types",
        "tiergate.core.catalog",
        "tiergate.core.money",
        "tiergate.core.tokens",
        "tiergate.core.windows",
        "tiergate.core.breaker",
        "tiergate.core.limits",
        "tiergate.core.ids",
        "tiergate.router.policy",
    ],
)
def test_the_core_and_the_policy_load_no_io_library_and_no_other_part(module):
    code = (
        f"import sys, {module}; "
        "print(' '.join(sorted({n for n in sys.modules if n.split('.')[0] in "
        f"{sorted(HEAVY)!r} or (n.startswith('tiergate.') and n.split('.')[1] not in ('core', 'router'))}})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    allowed_router = {"tiergate.router"} if module == "tiergate.router.policy" else set()
    assert set(out) - allowed_router == set(), f"{module} loads {out}"


def test_the_pipeline_loads_no_http_server_or_client():
    code = (
        "import sys, tiergate.pipeline.service; "
        "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] in ('aiohttp', 'redis', 'psycopg'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == []
