"""The package layout keeps its shape: small modules, no import cycles, netpolicy on the
shared core only, and every package installed."""

import ast
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("racf_vm", "netpolicy")
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set) -> set:
    """Project modules ``name`` imports, anywhere in the file (deferred imports count)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "pkg.mod.func" -> "pkg.mod"
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph():
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_no_product_module_is_over_the_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these (more than {MAX_LINES} lines): {long}"


def _cycles(edges: dict) -> list:
    state: dict = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return cycles


def test_cycle_detection_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    # a package's __init__ importing its own submodules is how a package is made, not a cycle
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in _graph().items()}
    cycles = _cycles(edges)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_netpolicy_uses_only_the_shared_core():
    graph = _graph()
    outside = {f"{m} -> {d}" for m, deps in graph.items() if m.startswith("netpolicy")
               for d in deps if d.startswith("racf_vm") and not d.startswith("racf_vm.core")}
    assert outside == set()


def test_core_depends_on_nothing_else():
    graph = _graph()
    outside = {f"{m} -> {d}" for m, deps in graph.items() if m.startswith("racf_vm.core")
               for d in deps if not d.startswith("racf_vm.core")}
    assert outside == set()


def test_every_package_is_installed():
    packages = {n.rpartition(".")[0] if not (REPO / n.replace(".", "/")).is_dir() else n
                for n in _modules()}
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    patterns = [re.compile(re.escape(p).replace(r"\*", ".*") + "$") for p in find["include"]]
    missing = [p for p in packages if not any(rx.match(p) for rx in patterns)]
    assert missing == []
    for pkg in packages:
        assert (REPO / pkg.replace(".", "/") / "__init__.py").is_file(), pkg


def test_no_cycles_between_packages():
    """racf_vm's subpackages form layers: core, config, trust, images, condor, vm, guest,
    job, cli; none reaches back up (the job plan is what wires vm and guest together)."""
    def package(mod):
        parts = mod.split(".")
        return ".".join(parts[:2]) if parts[0] == "racf_vm" else parts[0]

    edges: dict = {}
    for mod, deps in _graph().items():
        src = package(mod)
        for dep in deps:
            dst = package(dep)
            if dst != src and dst != "racf_vm" and src != "racf_vm":
                edges.setdefault(src, set()).add(dst)
    cycles = _cycles(edges)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)
