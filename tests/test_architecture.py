"""The house rules, checked on the source: every import of every module (module level and inside
functions, read with ``ast``), resolved to the repository's own modules.

* no import cycle between modules;
* no library module imports the command-line layer (``qcfs2lava.cli``);
* the PyTorch side (``qcfs2lava`` outside ``cli``) never imports ``netx_export``;
* the utilities (``qcfs2lava.util``) import neither torch nor any other module of ours;
* the Lava runtime never imports the simulators it is checked against (``netx_export.sim``);
* the Lava process package (``netx_export.lava``) holds processes and models only: it imports nothing
  of ours but the Python 3.11 shim (``netx_export.lava_compat``).

It prints the packages in dependency order (each imports only those before it).
"""
from __future__ import annotations

import ast
import os
from graphlib import CycleError, TopologicalSorter

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("qcfs2lava", "netx_export")


def _modules() -> dict[str, str]:
    mods = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                    mods[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _package_of(mod: str) -> str:
    """A module's package; a loose module at a package root (``netx_export.errors``) counts as its own."""
    if os.path.basename(MODULES[mod]) == "__init__.py":
        return mod
    parent = mod.rpartition(".")[0]
    return mod if parent in PACKAGES else parent


CLI = ("qcfs2lava.cli", "qcfs2lava.__main__")        # the command-line layer


def imports_of(mod: str) -> set[str]:
    """Our modules that ``mod`` imports anywhere in its source (plus lazy ``_API`` names of an ``__init__``)."""
    tree = ast.parse(open(MODULES[mod], encoding="utf-8").read())
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = (mod if MODULES[mod].endswith("__init__.py") else mod.rpartition(".")[0]).split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id == "_API" and isinstance(node.value, ast.Dict)):
            targets = [v.value for v in node.value.values if isinstance(v, ast.Constant)]
        for t in targets:
            r = _resolve(t)
            if r is not None and r != mod:
                out.add(r)
    return out


def _third_party(mod: str) -> set[str]:
    tree = ast.parse(open(MODULES[mod], encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


GRAPH = {m: imports_of(m) for m in MODULES}


def _in(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def test_no_import_cycle():
    try:
        order = list(TopologicalSorter(GRAPH).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' → '.join(e.args[1])}")
    packages: list[str] = []
    for m in order:
        p = _package_of(m)
        if p not in packages:
            packages.append(p)
    pkg_graph = {p: {_package_of(d) for m in MODULES if _package_of(m) == p for d in GRAPH[m]} - {p}
                 for p in packages}
    try:
        pkg_order = list(TopologicalSorter(pkg_graph).static_order())
    except CycleError as e:
        pytest.fail(f"package cycle: {' → '.join(e.args[1])}")
    print("\npackages in dependency order (each imports only those before it):")
    for p in pkg_order:
        deps = sorted(pkg_graph[p])
        print(f"  {p:<28s} ← {', '.join(deps) if deps else '(nothing of ours)'}")


def _violations(src_pred, dst_pred) -> list[str]:
    return sorted(f"{m} imports {d}" for m, ds in GRAPH.items() if src_pred(m) for d in ds if dst_pred(d))


def _cli(mod: str) -> bool:
    return any(_in(mod, c) for c in CLI)


def test_library_never_imports_the_command_line():
    assert not _violations(lambda m: not _cli(m), _cli)


def test_pytorch_side_never_imports_the_exporter():
    assert not _violations(lambda m: _in(m, "qcfs2lava") and not _cli(m), lambda d: _in(d, "netx_export"))


def test_utilities_are_a_leaf_without_torch():
    util = [m for m in MODULES if _in(m, "qcfs2lava.util")]
    assert util
    assert not _violations(lambda m: m in util, lambda d: d not in util)
    assert not [m for m in util if "torch" in _third_party(m)]


def test_lava_runtime_is_independent_of_the_simulators():
    assert [m for m in MODULES if _in(m, "netx_export.lava_runtime")]
    assert not _violations(lambda m: _in(m, "netx_export.lava_runtime"), lambda d: _in(d, "netx_export.sim"))


def test_lava_process_package_holds_processes_only():
    allowed = {"netx_export.lava_compat"}
    assert not _violations(lambda m: _in(m, "netx_export.lava"),
                           lambda d: not _in(d, "netx_export.lava") and d not in allowed
                           and not (_in(d, "netx_export") and d == "netx_export"))


def test_rules_catch_a_cycle(tmp_path):
    """The checker itself: a synthetic cycle is found (so the tests above can fail)."""
    graph = dict(GRAPH)
    graph["netx_export.sim.refsim"] = GRAPH["netx_export.sim.refsim"] | {"netx_export.report.collect"}
    with pytest.raises(CycleError):
        list(TopologicalSorter(graph).static_order())
    assert "netx_export.sim.refsim" in GRAPH["netx_export.report.collect"]


def test_scripts_parse_and_import_only_installed_packages():
    """benchmarks/ and hardware_runs/ are scripts over the installed packages: they parse, and none edits
    sys.path to reach the source tree."""
    for folder in ("benchmarks", "hardware_runs"):
        for f in sorted(os.listdir(os.path.join(ROOT, folder))):
            if f.endswith(".py"):
                src = open(os.path.join(ROOT, folder, f), encoding="utf-8").read()
                ast.parse(src, filename=f"{folder}/{f}")
                assert "sys.path.insert" not in src and "sys.path.append" not in src, f"{folder}/{f}"
