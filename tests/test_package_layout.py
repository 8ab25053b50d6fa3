"""The package's layers point one way: the import graph between its rooms (subpackages and top-level modules) has
no cycle, networks import no transforms, and the library imports none of the experiment drivers
(``monai_diff3m.experiments``; they import the library).

Run as a script to print the graph: ``python tests/test_package_layout.py [package folder]``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "monai_diff3m"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
#: The subpackage of experiment drivers, and the one library module allowed to import it: the main job's command.
EXPERIMENTS = "experiments"
EXPERIMENT_COMMANDS = {f"{PACKAGE}.comparison"}


def _room(module: str) -> str | None:
    """The room of a dotted module name inside the package (``monai_diff3m.data.schema`` -> ``data``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def _imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    # ``from monai_diff3m import schema`` imports a module named by the alias
    return [f"{base}.{alias.name}" for alias in node.names] if base == PACKAGE else [base]


def _modules(package_dir: Path) -> list[tuple[str, bool, Path]]:
    """(dotted name, is a package's ``__init__``, path) of every module in the package."""
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules.append((".".join(parts), is_package, path))
    return modules


def module_imports(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import, module-level or inside a function), the root
    ``__init__`` included."""
    imports: dict[str, set[str]] = {}
    for module, is_package, path in _modules(package_dir):
        if "bundle" in module.split(".")[1:2]:
            continue
        imports[module] = {
            imported
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            for imported in _imported_modules(node, module, is_package)
            if imported.split(".")[0] == PACKAGE
        }
    return imports


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Room -> rooms it imports (any import, module-level or inside a function); the root ``__init__`` is left out
    because it only re-exports every room."""
    graph: dict[str, set[str]] = {}
    for module, imported_modules in module_imports(package_dir).items():
        source = _room(module)
        if source is None:
            continue
        targets = graph.setdefault(source, set())
        for imported in imported_modules:
            target = _room(imported)
            if target is not None and target != source:
                targets.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one room (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(room: str) -> None:
        index[room] = lowlink[room] = len(index)
        stack.append(room)
        for target in sorted(graph.get(room, ())):
            if target not in index:
                visit(target)
                lowlink[room] = min(lowlink[room], lowlink[target])
            elif target in stack:
                lowlink[room] = min(lowlink[room], index[target])
        if lowlink[room] == index[room]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == room:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for room in sorted(graph):
        if room not in index:
            visit(room)
    return found


def graph_text(graph: dict[str, set[str]]) -> str:
    lines = [f"{room:<18} -> {', '.join(sorted(targets)) or '(nothing)'}" for room, targets in sorted(graph.items())]
    lines.append(f"cycles: {cycles(graph) or 'none'}")
    return "\n".join(lines)


def test_the_import_graph_has_no_cycle():
    """``data`` and ``transforms`` imported each other (``data.dicom`` -> ``transforms.image``,
    ``transforms.ehr`` -> ``data.schema``)."""
    graph = import_graph()
    assert {"networks", "transforms", "data", "engines", "inferers", "handlers", "metrics"} <= set(graph)
    assert cycles(graph) == [], graph_text(graph)


def test_networks_import_no_transforms_and_data_imports_only_what_lies_below_it():
    """``networks.diff3m_unet`` imported ``transforms.masking`` for the checkerboard masks."""
    graph = import_graph()
    assert "transforms" not in graph["networks"] and "data" not in graph["networks"], graph_text(graph)
    assert graph["transforms"].isdisjoint({"data", "engines", "inferers", "handlers", "metrics"}), graph_text(graph)


def test_the_library_imports_no_experiment_driver():
    """The experiment drivers (the main job's comparison, the scoring and defaults studies, the lung-field training)
    sat inside the library; they import it, and only the main job's command imports them back."""
    imports = module_imports()
    assert any(_room(module) == EXPERIMENTS for module in imports)
    importers = sorted(
        module
        for module, imported_modules in imports.items()
        if _room(module) != EXPERIMENTS
        and module not in EXPERIMENT_COMMANDS
        and any(_room(imported) == EXPERIMENTS for imported in imported_modules)
    )
    assert importers == [], f"library modules importing {PACKAGE}.{EXPERIMENTS}: {importers}"


#: Every command a user runs with ``python -m``, as ``(module, whether the repository may be on PYTHONPATH)``: the
#: main job, the experiments and the phantom generator; the preprocessing commands only as installed.
COMMANDS = [
    *[
        (f"{PACKAGE}.{name}", True)
        for name in (
            "comparison",
            "data.phantoms",
            "experiments.comparison",
            "experiments.scoring_study",
            "experiments.defaults_study",
            "experiments.train_lung_fields",
        )
    ],
    (f"{PACKAGE}.preprocessing.chexpert", False),
    (f"{PACKAGE}.preprocessing.mimic.run_all", False),
    (f"{PACKAGE}.preprocessing.mimic.step1_omr_ehr", False),
]


@pytest.mark.slow
def test_every_command_runs_as_a_module_from_any_folder_and_warns_nothing(tmp_path):
    """``python -m <command> --help`` from a folder outside the clone, each in its own interpreter, all at once.

    - The main job keeps its command, ``python -m monai_diff3m.comparison``, after its driver moved to
      ``monai_diff3m.experiments``; the studies run as ``python -m monai_diff3m.experiments.<name>``.
    - ``python -m monai_diff3m.data.phantoms`` printed runpy's RuntimeWarning: the package's ``__init__`` had imported
      the module before runpy ran it as ``__main__``.
    - The repository's ``preprocessing/`` installs as ``monai_diff3m.preprocessing``: its commands run without the
      clone on the path, and no top-level ``preprocessing`` package lands in site-packages to clash with another
      project's.
    """
    installed_only = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with_clone = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    runs = {
        module: subprocess.Popen(
            [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=with_clone if clone_on_path else installed_only,
        )
        for module, clone_on_path in COMMANDS
    }
    top_level = subprocess.Popen([sys.executable, "-c", "import preprocessing"], cwd=tmp_path, env=installed_only)
    for module, run in runs.items():
        stdout, stderr = run.communicate()
        assert run.returncode == 0 and "RuntimeWarning" not in stderr, f"{module}: {stderr}"
        assert "usage:" in stdout, module
    assert top_level.wait() != 0


if __name__ == "__main__":
    print(graph_text(import_graph(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR)))
