"""The import layering of docs/INTERFACES.md: ``app → editing → models``, and no cycles.

Read from the source (AST), so an import inside a function counts as much as one at the top:
a lazy import hides a wrong dependency from Python, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"models": 0, "editing": 1, "app": 2}
"""A package may import packages of its own rank or lower, never higher."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for top in LAYERS for p in sorted((ROOT / top).rglob("*.py"))}


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``module`` imports anywhere in its body (a name imported from a
    package counts as its submodule when there is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    known = set(sources)
    return {module: _imported(module, path, known) for module, path in sources.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_follow_the_arrow() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if LAYERS[target.split(".")[0]] > LAYERS[module.split(".")[0]]
    ]
    assert not wrong, "imports against app → editing → models:\n" + "\n".join(wrong)


def test_the_two_command_lines_do_not_import_each_other() -> None:
    graph = import_graph()
    assert "editing.evaluate.cli" in graph["editing.cli"]  # the evaluate sub-command is always there
    assert "editing.cli" not in graph["editing.evaluate.cli"]


def test_no_import_cycles_in_editing_and_models() -> None:
    graph = import_graph()
    found = [c for c in cycles(graph) if not all(m.startswith("app") for m in c)]
    assert not found, f"import cycles: {found}"


APP_PARTS: dict[str, set[str]] = {
    "app.store": set(),
    "app.queue": {"app.store"},
    "app.serving": {"app.store", "app.queue", "app.settings", "app.metrics"},
    "app.worker": {"app.serving", "app.store", "app.queue", "app.settings", "app.metrics"},
    "app.api": {"app.serving", "app.store", "app.queue", "app.settings", "app.services",
                "app.metrics"},
    "app.console": set(),
    "app.vllm": {"app.serving", "app.store", "app.settings", "app.api"},
}
"""The folders of ``app/`` and which other parts of ``app/`` each may import (docs/design.md
"Layout"): HTTP, the worker and model serving do not reach into each other except the API
asking serving for the model; ``app/vllm`` (vLLM as the engine) shares the OpenAI protocol of
``app/api/openai``; only ``app/services.py`` (the composition root), ``main.py`` and
``cli.py`` see them all."""


def _part(module: str) -> str:
    """The folder (or top-level module) a module belongs to: ``app.api.edits`` -> ``app.api``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports_across_parts(parts: dict[str, set[str]], extra: dict[str, set[str]] | None = None) -> list[str]:
    """Imports from one of ``parts`` into another part of the same package that ``parts``
    (or ``extra``, per module) does not list; every part must exist as a folder."""
    for part in parts:
        assert (ROOT / part.replace(".", "/") / "__init__.py").is_file(), f"{part} is missing"
    package = next(iter(parts)).split(".")[0] + "."
    extra = extra or {}
    return [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if _part(module) in parts
        for target in sorted(targets)
        if target.startswith(package) and _part(target) != _part(module)
        and _part(target) not in parts[_part(module)] | extra.get(module, set())
    ]


def test_app_is_in_parts_that_import_only_what_they_may() -> None:
    wrong = _imports_across_parts(APP_PARTS)
    assert not wrong, "imports across app/'s parts that docs/design.md does not allow:\n" + "\n".join(wrong)


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    """The detector itself: a lazy upward import is still an import."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from app.store import VersionStore\n")
    assert _imported("models.lazy", source, {"app.store", "models.lazy"}) == {"app.store"}


EDITING_PARTS: dict[str, set[str]] = {
    "editing.weights": set(),
    "editing.forward": set(),
    "editing.solve": {"editing.forward", "editing.paths"},
    "editing.targets": {"editing.forward", "editing.weights", "editing.hparams", "editing.requests"},
    "editing.methods": {"editing.forward", "editing.weights", "editing.solve", "editing.targets",
                        "editing.hparams", "editing.requests"},
    "editing.export": {"editing.weights"},
    "editing.evaluate": {"editing.forward", "editing.weights", "editing.requests", "editing.paths"},
}
"""The folders of ``editing/`` and what else in ``editing/`` each may import (docs/design.md
"Layout"). ``weights`` and ``forward`` stand alone, so how a stored delta is read and how text
is tokenised cannot depend on how an edit is computed; nothing that computes an edit imports
``evaluate``, so a measurement never shapes the edit it measures. A name here is a folder or a
top-level module; the top level (``Editor``, requests, state, hyper-parameters, the CLI)
composes the folders and may import any of them."""

EDITING_COMMAND_LINES: dict[str, set[str]] = {
    "editing.evaluate.cli": {"editing.methods", "editing.options", "editing.hparams"},
}
"""Command lines inside a folder may also build an editor (``python -m editing evaluate``)."""

EDITING_TOP_LEVEL = {
    "editing", "editing.__main__", "editing.cli", "editing.options", "editing.editor",
    "editing.requests", "editing.state", "editing.hparams", "editing.presets", "editing.strength",
    "editing.paths",
}
"""The public entry points left at the top of ``editing/``; every other job lives in a folder."""

def test_editing_is_in_parts_that_import_only_what_they_may() -> None:
    wrong = _imports_across_parts(EDITING_PARTS, EDITING_COMMAND_LINES)
    assert not wrong, "imports across editing/'s parts that docs/design.md does not allow:\n" + "\n".join(wrong)


def test_the_top_of_editing_holds_only_entry_points() -> None:
    top = {m for m in import_graph() if m.startswith("editing") and m.count(".") <= 1
           and not (ROOT / m.replace(".", "/")).is_dir()} | {"editing"}
    assert top == EDITING_TOP_LEVEL, (
        "a new module at the top of editing/ belongs in a folder (docs/design.md \"Layout\"), "
        f"or in EDITING_TOP_LEVEL if it is an entry point: {sorted(top ^ EDITING_TOP_LEVEL)}"
    )


def _packages_imported(path: Path) -> set[str]:
    """Top-level packages a file imports anywhere in its body (absolute imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def _importers(of: str, tops: tuple[str, ...]) -> list[str]:
    return [str(p.relative_to(ROOT)) for top in tops for p in sorted((ROOT / top).rglob("*.py"))
            if of in _packages_imported(p)]


def test_nothing_imports_the_studies() -> None:
    """Studies are records of one-off experiments, not code the product, the benchmarks or the
    tests may depend on (issue 31): CI neither runs nor imports them."""
    assert (ROOT / "studies").is_dir()
    found = _importers("studies", ("app", "editing", "models", "bench", "tests"))
    assert not found, f"these import studies/: {found}"


def test_benchmarks_never_import_the_tests() -> None:
    """What a benchmark needs from the test suite (launching a service, the tiny model) lives in
    ``bench/``; the tests may import it from there, not the other way round."""
    found = _importers("tests", ("bench",))
    assert not found, f"these benchmarks import tests/: {found}"


def test_the_import_check_sees_lazy_and_dotted_imports(tmp_path: Path) -> None:
    source = tmp_path / "b.py"
    source.write_text("import os\ndef f():\n    from studies.frontier import main\n    import tests.tiny\n")
    assert _packages_imported(source) == {"os", "studies", "tests"}


def test_the_library_does_not_cite_studies() -> None:
    """The product says why in its own words (or points at docs/results/), never at a study
    that may no longer run on it."""
    import re

    study = re.compile(r"\bstudies[./]\w|\bbench[./](" + "|".join(
        p.stem for p in (ROOT / "studies").glob("*.py")) + r")\b")
    found = [f"{p.relative_to(ROOT)}:{n}" for top in ("app", "editing", "models")
             for p in sorted((ROOT / top).rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if study.search(line)]
    assert not found, f"these cite a study: {found}"


ENTRY_POINTS = {"main"}
"""Names every command-line module defines with one contract (argv -> exit status)."""


def test_no_two_public_functions_of_editing_and_models_share_a_name() -> None:
    """Two functions of one name with different contracts (``render_chat`` once returned text
    in ``editing`` and token ids in ``models``) make every call site a guess (issue 31)."""
    where: dict[str, list[str]] = {}
    for top in ("editing", "models"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                    where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1 and name not in ENTRY_POINTS}
    assert not shared, f"one name, several definitions: {shared}"


def test_tests_import_no_private_names_of_the_project() -> None:
    """Tests exercise public behaviour: a private helper is tested through the public function
    that uses it, or made public where that is the right API."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.split(".")[0] in ("app", "editing", "models")):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert not found, f"tests importing private names: {found}"


MAX_LINES = 400
"""A source file of ``app/``, ``editing/`` or ``models/`` longer than this holds more than one
job: split it along its jobs rather than raising the bound."""


def test_no_source_file_is_over_the_line_bound() -> None:
    long = {str(p.relative_to(ROOT)): n for top in ("app", "editing", "models")
            for p in (ROOT / top).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_app_uses_the_library_through_its_public_surface() -> None:
    """``app/`` imports ``editing`` itself, never a module behind it: the library's folders can
    then be reorganised without touching the service, and what the service needs is what any
    library user can import."""
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith("app")
        for target in sorted(targets)
        if target.startswith("editing.")
    ]
    assert not wrong, "app/ must import from `editing` only:\n" + "\n".join(wrong)
