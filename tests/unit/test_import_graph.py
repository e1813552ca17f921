"""hpcorch's modules import each other without cycles, and its packages in layers.

The graph is built from the source (ast), with function-local imports
counted too: a cycle hidden inside a function is a cycle all the same. Imports
under ``if TYPE_CHECKING:`` are left out (annotations only, never run).
``ALLOWED`` is the package map: what each package (or top-level module) of
hpcorch may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "hpcorch"

# The package map: each unit of hpcorch and the units it may import. The
# foundation (errors, units, spec, ...) is open to all and listed once.
FOUNDATION = frozenset(
    {"_version", "errors", "units", "spec", "dag", "failures", "ids", "yamltext"}
    | {"childenv", "guardian", "gpu_env", "containers"}
)
ALLOWED: dict[str, frozenset[str]] = {
    "__main__": frozenset({"cli"}),
    "_version": frozenset(),
    "errors": frozenset(),
    "units": frozenset(),
    "ids": frozenset(),
    "yamltext": frozenset(),
    "spec": frozenset(),
    # a container's spec and the argv that runs a command in it (pure)
    "containers": frozenset(),
    "dag": frozenset(),
    "topology": frozenset({"sites", "slurm"}),
    "failures": frozenset(),
    # secrets kept out of every child environment; the guardian of a worker's tasks
    "childenv": frozenset(),
    "guardian": frozenset(),
    # which GPUs a process may use, by vendor (CUDA_/ROCR_/HIP_VISIBLE_DEVICES)
    "gpu_env": frozenset(),
    "policies": frozenset({"sites"}),
    # A run's options (a frozen type), and the one module that reads them from the environment.
    "options": frozenset({"policies"}),
    "environment": frozenset({"options", "policies"}),
    "traces": frozenset({"environment"}),
    "gpu": frozenset({"environment"}),
    "mpi_bind": frozenset(),
    "mpi": frozenset({"mpi_bind", "mpi_run"}),
    "mpi_run": frozenset({"mpi_bind"}),
    # torch.distributed trainings: the launch's pure parts, the rank shim, the user's helpers
    "training": frozenset({"sites"}),
    "torch_run": frozenset({"mpi_run", "environment", "gpu_usage"}),
    # a training's GPU memory and utilization from NVML (its ranks sample, report reads)
    "gpu_usage": frozenset(),
    "torchdist": frozenset({"training", "environment"}),
    "journal": frozenset({"policies", "slurm"}),
    "sites": frozenset({"slurm", "topology", "environment"}),
    "slurm": frozenset({"sites"}),
    "placement": frozenset({"sites", "slurm", "topology", "training"}),
    "loaders": frozenset({"api", "traces"}),
    "api": frozenset({"engine", "loaders", "journal", "sites", "options", "environment"})
    | frozenset({"policies"}),
    # Where workers come from: never the run loop (engine) above it.
    "provision": frozenset({"placement", "policies", "sites", "slurm", "journal", "options"}),
    "engine": frozenset(
        {"provision", "placement", "policies", "sites", "slurm", "journal", "gpu", "mpi"}
        | {"options", "environment", "training", "gpu_usage"}
    ),
    "sim": frozenset(
        {"placement", "policies", "sites", "slurm", "traces", "loaders", "journal", "topology"}
    ),
    "report": frozenset(
        {"journal", "sites", "loaders", "policies", "slurm", "provision", "training", "gpu_usage"}
    ),
    "submit": frozenset(
        {"sites", "slurm", "loaders", "journal", "engine", "options", "environment"}
    ),
    "doctor": frozenset({"sites", "slurm", "gpu", "engine", "provision", "mpi"}),
    # What a run would submit (hpcorch plan): pools, the driver, MPI steps; no Slurm call.
    "plan": frozenset(
        {"sites", "slurm", "provision", "placement", "submit", "mpi", "options", "loaders"}
    ),
    "cli": frozenset(
        {"api", "engine", "provision", "journal", "loaders", "sites", "slurm", "sim", "report"}
        | {"submit", "doctor", "traces", "policies", "placement", "options", "environment"}
        | {"plan"}
    ),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("hpcorch", *path.relative_to(ROOT).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path
    return mods


def _graph() -> dict[str, set[str]]:
    """Module -> the hpcorch modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {
            id(inner)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
            for stmt in block.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                subs = [f"{base}.{a.name}" for a in node.names]
                names = [s for s in subs if s in mods] or [base]
            for imported in names:
                name = imported
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                # Importing one's own ancestor package is not a cycle.
                if name and name != mod and not mod.startswith(name + "."):
                    graph[mod].add(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _unit(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") else ""


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_packages_import_only_what_the_map_allows() -> None:
    wrong = []
    for mod, imported in sorted(_graph().items()):
        unit = _unit(mod)
        if not unit:
            continue
        if unit not in ALLOWED:
            wrong.append(f"{unit} is not in the package map")
            continue
        for other in sorted(imported):
            target = _unit(other)
            allowed = target in {"", unit} or target in FOUNDATION or target in ALLOWED[unit]
            if not allowed:
                wrong.append(f"{mod} imports {other}")
    assert not wrong, "imports against the package map:\n" + "\n".join(wrong)


def test_cycle_finder_names_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
