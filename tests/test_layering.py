"""The package's import graph goes one way: down the floors of the README's Layout section.

The graph is read from the source with `ast` (every `import` and `from ... import`, those
inside functions included), so a cycle or an upward import fails here before it can hide
behind import order at run time.
"""

import ast
import tomllib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kerasseg"

# Floor of each part of the package (the longest matching prefix wins). A module may import
# from its own floor or a lower one, never from a higher one, and never in a cycle.
FLOORS = {
    "kerasseg.ops": 1,
    "kerasseg.files": 1,
    "kerasseg.config": 1,
    "kerasseg.samples": 1,
    "kerasseg.palette": 1,
    "kerasseg.html_page": 1,
    "kerasseg.preprocessing": 2,
    "kerasseg.weights": 2,
    "kerasseg.public_weights": 2,
    "kerasseg.class_sets": 2,
    "kerasseg.run_folder": 2,
    "kerasseg.registry": 3,
    "kerasseg.models": 4,
    "kerasseg.classical": 4,
    "kerasseg.layers": 4,
    "kerasseg.inference": 5,
    "kerasseg.data": 5,
    "kerasseg.datasets": 5,
    "kerasseg.losses": 5,
    "kerasseg.metrics": 5,
    "kerasseg.evaluation": 6,
    "kerasseg.training": 6,
    "kerasseg.training_views": 6,
    "kerasseg.export": 6,
    "kerasseg.convert": 6,
    "kerasseg.demo": 6,
    "kerasseg": 7,  # the package's own __init__: the public face, above the library
    "kerasseg.cli": 8,
}
FLOOR_NAMES = {
    1: "ops and utilities",
    2: "preprocessing and weights",
    3: "registry",
    4: "models and classical",
    5: "inference, data, losses, metrics",
    6: "evaluation, training, export, convert",
    7: "the kerasseg package",
    8: "cli",
}


def module_name(path, root):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root):
    """{module: [(imported module, line, private names imported)]} of a package folder."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = []
                for alias in node.names:
                    if f"{base}.{alias.name}" in files:  # `from package import module`
                        targets.append((f"{base}.{alias.name}", ()))
                    else:
                        private = (alias.name,) if _is_private(alias.name) else ()
                        targets.append((base, private))
            else:
                continue
            for target, private in targets:
                if target.split(".")[0] != root.name:
                    continue
                while target not in files and "." in target:
                    target = target.rpartition(".")[0]
                if target != module:
                    edges.append((target, node.lineno, private))
        graph[module] = edges
    return graph


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def floor_of(module):
    best = max((prefix for prefix in FLOORS if _within(module, prefix)), key=len, default=None)
    return None if best is None else FLOORS[best]


def _within(module, prefix):
    return module == prefix or module.startswith(prefix + ".")


def _top_package(module):
    parts = module.split(".")
    return ".".join(parts[:2])


def layering_problems(graph):
    """Every upward import, cross-package private import and unplaced module, one line each."""
    problems = []
    for module, edges in sorted(graph.items()):
        floor = floor_of(module)
        if floor is None:
            problems.append(f"{module}: no floor; add it to FLOORS and the README's Layout")
            continue
        for target, line, private in edges:
            target_floor = floor_of(target)
            if target_floor is not None and target_floor > floor:
                problems.append(
                    f"{module} (floor {floor}, {FLOOR_NAMES[floor]}) line {line} imports "
                    f"{target} (floor {target_floor}, {FLOOR_NAMES[target_floor]}): upward"
                )
            if private and _top_package(module) != _top_package(target):
                problems.append(
                    f"{module} line {line} imports the private {', '.join(private)} of "
                    f"{target}, another package"
                )
    return problems


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}
    stack = []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target, _, _ in graph.get(module, ()):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_imports_only_go_down_the_floors():
    problems = layering_problems(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _package(tmp_path, files):
    root = tmp_path / "kerasseg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_catch_an_upward_import_a_cycle_and_a_private_import(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "ops/__init__.py": "",
            "ops/checks.py": "def _helper():\n    from kerasseg.models import unet\n",
            "models/__init__.py": "",
            "models/unet.py": "from kerasseg.ops.checks import _helper\n",
            "registry.py": "import kerasseg.training\n",
            "training.py": "",
        },
    )
    graph = import_graph(root)
    problems = "\n".join(layering_problems(graph))
    assert "kerasseg.ops.checks (floor 1, ops and utilities) line 2 imports" in problems
    assert "kerasseg.registry (floor 3, registry) line 1 imports kerasseg.training" in problems
    assert "imports the private _helper of kerasseg.ops.checks" in problems
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"kerasseg.models.unet", "kerasseg.ops.checks"}


@pytest.mark.parametrize(
    "module, floor",
    [("kerasseg.ops.detection", 1), ("kerasseg.models.maskrcnn.rpn", 4), ("kerasseg.cli", 8)],
)
def test_every_module_has_its_floor(module, floor):
    assert floor_of(module) == floor
    assert module in import_graph(PACKAGE) or module == "kerasseg.cli"


def test_every_package_folder_ships_in_the_wheel():
    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    folders = {module_name(init, PACKAGE) for init in PACKAGE.rglob("__init__.py")}
    assert folders <= listed, f"add to pyproject.toml's packages: {sorted(folders - listed)}"
