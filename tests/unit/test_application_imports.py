"""The application's import graph (issue 15.3): no cycle among its modules, counting the
imports made for type checking only and those inside functions, and the connection imports
no use case (bootstrap attaches them: Node.handlers). The transports' packages have no cycle
either, and no module of chatserver uses a private name of asyncio (issue 15.2)."""

import re
from pathlib import Path

import grimp
import pytest

APPLICATION = "chatserver.application"
# The modules of use cases, and the table that names them (application.dispatch).
USE_CASES = {
    "account_changes", "accounts", "chat", "dispatch", "files", "friends", "groups", "history",
    "operators",
}


def _graph(package: str = APPLICATION) -> dict[str, set[str]]:
    graph = grimp.build_graph("chatserver", cache_dir=None)
    modules = {m for m in graph.modules if m.startswith(package + ".")}
    return {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules}
        for m in modules
    }


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1 or module in edges[module]:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_in_the_application() -> None:
    edges = _graph()
    assert len(edges) > 20  # the graph was built: every module of the application is in it
    assert _cycles(edges) == []


@pytest.mark.parametrize(
    "package",
    ["chatserver.adapters.tcp", "chatserver.adapters.serving", "chatserver.adapters.web"],
)
def test_no_import_cycle_in_a_transport(package: str) -> None:
    edges = _graph(package)
    assert len(edges) >= 3, edges  # the graph was built
    assert _cycles(edges) == []


# asyncio._x, asyncio.tasks._x, "from asyncio.tasks import _x", "from asyncio import _x".
_PRIVATE_ASYNCIO = re.compile(
    r"\basyncio(?:\.\w+)*\._\w+|\bfrom\s+asyncio(?:\.\w+)*\s+import\s+[^\n]*\b_\w+"
)


def test_no_private_asyncio_name_is_used() -> None:
    root = Path(__file__).resolve().parents[2] / "chatserver"
    used = [
        f"{path.relative_to(root)}: {match.group(0)}"
        for path in sorted(root.rglob("*.py"))
        for match in _PRIVATE_ASYNCIO.finditer(path.read_text(encoding="utf-8"))
    ]
    assert used == []


def test_the_private_asyncio_check_finds_one() -> None:
    assert _PRIVATE_ASYNCIO.search("asyncio.tasks._enter_task(loop, task)")
    assert _PRIVATE_ASYNCIO.search("from asyncio.tasks import _enter_task")
    assert not _PRIVATE_ASYNCIO.search("asyncio.get_running_loop(); asyncio.Task")


def test_the_cycle_check_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_the_connection_reaches_no_use_case() -> None:
    edges = _graph()
    reached: set[str] = set()
    todo = [f"{APPLICATION}.connection"]
    while todo:
        for imported in edges[todo.pop()]:
            if imported not in reached:
                reached.add(imported)
                todo.append(imported)
    use_cases = {f"{APPLICATION}.{name}" for name in USE_CASES}
    assert f"{APPLICATION}.lifecycle" in reached  # the walk follows its imports
    assert reached & use_cases == set()
