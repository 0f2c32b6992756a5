"""The seam between the generation service and the engines: an engine's run state is its own."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE_PACKAGES = [
    REPO / "services" / "engines" / "local",
    REPO / "services" / "engines" / "replicate",
]


def _modules_outside_the_engines() -> list[Path]:
    found = [REPO / "app.py", *sorted((REPO / "ui").rglob("*.py"))]
    for path in sorted((REPO / "services").rglob("*.py")):
        if not any(path.is_relative_to(package) for package in ENGINE_PACKAGES):
            found.append(path)
    return found


def _state_reads(path: Path, root: Path = REPO) -> list[str]:
    """Every `<something>.engine_state` in a module: EngineRun's engine-private bookkeeping."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "engine_state"
    ]


def test_no_module_outside_an_engine_reads_a_runs_state() -> None:
    modules = _modules_outside_the_engines()
    assert REPO / "services" / "generation" / "runner.py" in modules
    assert [where for path in modules for where in _state_reads(path)] == []


def test_the_check_sees_a_read_where_there_is_one(tmp_path: Path) -> None:
    module = tmp_path / "reader.py"
    module.write_text("def peek(run):\n    return run.engine_state.prediction\n")
    assert _state_reads(module, root=tmp_path) == ["reader.py:2"]
