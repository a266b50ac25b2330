"""The package's import graph (function-local imports included): inference never reaches training."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "densemed"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """``{module: densemed modules it imports anywhere in its source}``."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_graph_sees_function_local_imports():
    # densemed.cli imports its commands' modules inside the functions only
    assert "densemed.infer.predict" in _graph()["densemed.cli"]


def test_no_inference_module_imports_training():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("densemed.infer"):
            assert not {d for d in deps if d.startswith("densemed.train")}, name


def test_prediction_never_reaches_the_training_loop():
    graph = _graph()
    for start in ("densemed.infer.predict", "densemed.build", "densemed.tasks", "densemed.checkpoint"):
        assert "densemed.train.loop" not in _reach(graph, start), start


def test_the_factories_sit_below_training_and_inference():
    deps = _graph()["densemed.build"]
    assert not {d for d in deps if d.startswith(("densemed.train", "densemed.infer", "densemed.cli"))}


def test_no_task_name_is_tested_outside_tasks():
    import re

    pattern = re.compile(r"""task(_name)?\s*==\s*["']|\.task\s*==""")
    for path in PKG.rglob("*.py"):
        if "tasks" in path.relative_to(PKG).parts:
            continue
        assert not pattern.search(path.read_text()), path
