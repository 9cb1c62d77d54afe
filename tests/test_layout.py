"""The layout's import rules (docs/architecture.md, "Layout and import direction"), read from the source:
``benchmarks -> transfer -> pretrain``, each package's sub-packages one way, and no module importing one
that imports it back (function-level imports included: a lazy import is still a dependency)."""
import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pretrain", "transfer", "benchmarks")
LOWER = {"pretrain": set(), "transfer": {"pretrain"}, "benchmarks": {"pretrain", "transfer"}}
# Sub-packages of a package and what each may import of its own package: the "base" top-level modules
# (errors, configuration, process groups, version) and the sub-packages listed. Top-level modules
# that are not base (the training loop, the driver) may import anything of their package.
BASE = {"pretrain": {"pretrain", "pretrain.errors", "pretrain.version", "pretrain.config", "pretrain.distributed"},
        "benchmarks": {"benchmarks", "benchmarks.suites", "benchmarks.digests"}}
LAYERS = {
    "pretrain.models": set(),
    "pretrain.data": set(),
    "pretrain.checkpoints": {"pretrain.models"},
    "pretrain.methods": {"pretrain.models"},
    "benchmarks.results": set(),
    "benchmarks.report": {"benchmarks.results"},
    "benchmarks.launch": {"benchmarks.results", "benchmarks.cli"},   # a job runs `bench` (commands load by name)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> Dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The project modules ``name`` imports anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # "from package import submodule" depends on the submodule; else on the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:   # pretrain.models.spec.SubnetSpec -> pretrain.models.spec
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> Dict[str, Set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def group_of(module: str) -> str:
    """The sub-package a module belongs to (``pretrain.models``), or its package for top-level modules."""
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return module.split(".")[0]


def test_packages_import_downwards_only():
    wrong = [f"{m} imports {t}" for m, ts in graph().items() for t in ts
             if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in LOWER[m.split(".")[0]]]
    assert not wrong, "\n".join(wrong)


def test_sub_packages_depend_one_way():
    wrong = []
    for m, ts in graph().items():
        layer = group_of(m)
        if layer not in LAYERS:
            continue
        package = m.split(".")[0]
        for t in ts:
            if t.split(".")[0] != package or group_of(t) == layer or t in BASE.get(package, ()):
                continue
            if group_of(t) not in LAYERS[layer] and t not in LAYERS[layer]:
                wrong.append(f"{m} ({layer}) imports {t}: {layer} may import {sorted(LAYERS[layer]) or 'no sibling'}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_one_that_imports_it_back():
    g = graph()
    cycles: List[List[str]] = []
    state: Dict[str, int] = defaultdict(int)   # 0 new, 1 on the stack, 2 done
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if state[t] == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif state[t] == 0:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if state[m] == 0:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_see_real_imports():
    g = graph()   # a walker that found nothing would pass every rule above
    assert "pretrain.models.spec" in g["pretrain.models.resnet"]
    assert "pretrain.checkpoints.format" in g["transfer.protocols.linear"] or any(
        t.startswith("pretrain.") for t in g["transfer.protocols.linear"])
    assert "benchmarks.cli" in g["benchmarks.__main__"]
