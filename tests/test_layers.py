"""Layers without circles: kdray's import graph, read from the source with `ast`.

Every import counts: at module level, inside functions, under `if TYPE_CHECKING:`, absolute
and relative. The graph must have no cycle, between modules or between packages; each package
imports only the packages `LAYERS` allows it; only the command-line modules may import the CLI
plumbing (`kdray.cli`) and no library module imports a command line; the task table and the
config import no torch, pandas or numpy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import kdray

ROOT = Path(kdray.__file__).resolve().parent

#: The command lines: the only modules that may import kdray.cli (in their main paths), and
#: modules no library module imports.
CLI_MODULES = {
    "kdray.cli",
    "kdray.train",
    "kdray.sweep",
    "kdray.analyze",
    "kdray.teacher",
    "kdray.export",
}
#: The layers: package -> the packages its modules may import, bottom up (docs/development.md,
#: "Layers").
#: The top-level modules (the command lines, `kdray.api`, `kdray` itself) may import any.
LAYERS: dict[str, set[str]] = {
    "base": set(),
    "config": {"base"},
    "data": {"base", "config"},
    "models": {"base", "config", "data"},
    "knowledge": {"base", "config", "data", "models"},
    "selector": {"base", "config"},
    "teacher_policy": {"base", "config", "models", "selector"},
    "teachers": {"base", "config", "data", "models", "knowledge"},
    "training": {"base", "config", "data", "models", "knowledge", "selector", "teacher_policy",
                 "teachers"},
    "search": {"base", "config", "data", "models", "knowledge", "selector", "teacher_policy",
               "teachers", "training"},
    "analysis": {"base", "config", "data", "selector", "search"},
}  # fmt: skip
#: Imported by checks and sweep files: no torch, pandas or numpy (directly or through kdray).
LIGHT = ("kdray.data.tasks", "kdray.config")
HEAVY = ("torch", "pandas", "numpy")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package(module: str) -> str:
    """The layer a module belongs to: its package under kdray/, or "kdray" for the top-level
    modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else "kdray"


def package_graph() -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    out: dict[str, set[str]] = {}
    for module, deps in graph().items():
        out.setdefault(package(module), set()).update(package(d) for d in deps)
    return {p: deps - {p} for p, deps in out.items()}


@cache
def modules() -> dict[str, Path]:
    """Every module of the kdray package -> its file."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The kdray module an imported dotted name loads (its longest module prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules():
            return candidate
    return None


@cache
def imports(module: str) -> tuple[set[str], set[str]]:
    """(kdray modules, top-level third-party packages) that `module` imports anywhere."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, up level - 1
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # `from pkg import sub` loads pkg.sub when that is a module, else a name of pkg
            names = [f"{source}.{alias.name}" for alias in node.names] + [source]
        for name in names:
            if name.split(".")[0] == "kdray":
                target = _target(name)
                if target is not None and target != module:
                    internal.add(target)
            elif name and not name.startswith("__future__"):
                external.add(name.split(".")[0])
    return internal, external


def graph() -> dict[str, set[str]]:
    return {m: imports(m)[0] for m in modules()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, sorted for
    reproducible messages)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def closure(module: str) -> set[str]:
    """`module` and every kdray module it imports, directly or not."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += imports(m)[0]
    return seen


# ---------------------------------------------------------------------------------- tests


def test_the_walker_sees_every_kind_of_import() -> None:
    assert {"kdray.config", "kdray.cli", "kdray.selector.base"} <= set(modules())
    internal, external = imports("kdray.knowledge")
    assert {"kdray.knowledge.layers", "kdray.knowledge.base", "kdray.config"} <= internal
    assert "torch" in external
    assert "kdray.cli" in imports("kdray.sweep")[0]  # inside `if __name__ == "__main__"`
    assert "kdray.training.build" in imports("kdray.training.state")[0]  # under TYPE_CHECKING
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_package_has_a_layer() -> None:
    packages = {package(m) for m in modules()} - {"kdray"}
    assert packages == set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS"


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycles_between_packages() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, "package cycle: " + " -> ".join(cycle or [])


def test_each_package_imports_only_the_layers_below_it() -> None:
    for module, deps in sorted(graph().items()):
        layer = package(module)
        if layer == "kdray":
            continue
        above = sorted(d for d in deps if package(d) not in LAYERS[layer] | {layer})
        assert not above, (
            f"{module} imports {', '.join(above)}; kdray.{layer} may import only "
            f"{', '.join(sorted(LAYERS[layer])) or 'nothing else of kdray'}"
        )


def test_only_the_command_lines_import_the_cli_plumbing() -> None:
    offenders = sorted(m for m, deps in graph().items() if "kdray.cli" in deps)
    assert set(offenders) <= CLI_MODULES, (
        f"{', '.join(sorted(set(offenders) - CLI_MODULES))} import kdray.cli; read YAML "
        f"through kdray.base.yamlio and check configs through kdray.training.checks"
    )


def test_no_library_module_imports_a_command_line() -> None:
    for module, deps in sorted(graph().items()):
        if module not in CLI_MODULES:
            bad = sorted(deps & (CLI_MODULES - {"kdray.cli"}))
            assert not bad, f"{module} imports the command line {', '.join(bad)}"


def test_analysis_reads_runs_without_the_sweep_or_the_trainer() -> None:
    bad = closure("kdray.analysis") & {"kdray.sweep", "kdray.training.trainer",
                                       "kdray.search.tuner", "kdray.cli"}  # fmt: skip
    assert not bad, f"kdray.analysis imports {', '.join(sorted(bad))}"


def test_tasks_and_config_are_light() -> None:
    for module in LIGHT:
        for dep in sorted(closure(module)):
            heavy = imports(dep)[1] & set(HEAVY)
            assert not heavy, f"{module} imports {', '.join(sorted(heavy))} (through {dep})"
    code = (
        f"import sys, {', '.join(LIGHT)}; "
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules); "
        f"assert not loaded, loaded"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_command_lines_start_without_model_code() -> None:
    """Every command answers --help and refuses bad input before transformers' modelling code
    is imported (seconds on 2 cores); the analysis and export ones import no torch at all."""
    code = (
        "import sys, kdray.cli, kdray.analyze, kdray.export; "
        "assert 'torch' not in sys.modules, 'torch'; "
        "import kdray.train, kdray.sweep, kdray.teacher; "
        "assert 'transformers' not in sys.modules, 'transformers'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
