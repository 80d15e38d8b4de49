"""The package layout (issue 19): one import name, one-way dependencies, no cycles, no work at import.

pyproject.toml maps the repository's top-level folders onto `refocus_edge.<name>`; these tests
read the same mapping, walk every module's imports statically (lazy imports inside functions
included, since they run too) and import everything once in a fresh interpreter.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
# refocus_edge.<name> -> folder, as pyproject.toml maps them
ROOTS = {name.removeprefix("refocus_edge."): REPO / folder
         for name, folder in PYPROJECT["package-dir"].items() if name != "refocus_edge"}
OLD_TOP_LEVEL = {"runtime", "export", "quantization", "focalstacks", "refocus_cli", "bench", "cli", "dof", "app"}
# What each installed subpackage may import (besides itself): dependencies point one way.
ALLOWED = {
    "runtime": set(),  # imports none of the other packages
    "focalstacks": set(),
    "dof": {"runtime"},  # depth of field sits on top of the runtime
    "app": {"runtime", "dof"},  # `refocus run`: sample, derive the views, publish
    "export": {"runtime", "focalstacks"},
    "quantization": {"runtime", "export", "focalstacks"},
    "bench": {"runtime", "focalstacks"},
    "cli": {"runtime", "dof", "app", "export", "quantization", "bench", "focalstacks"},
}


def _modules() -> dict[str, Path]:
    mods = {"refocus_edge": REPO / "refocus_edge" / "__init__.py"}
    for name, folder in ROOTS.items():
        for f in folder.rglob("*.py"):
            parts = f.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(("refocus_edge", name, *parts))] = f
    return mods


def _imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import statement in `path` names (absolute, relative ones resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def test_pyproject_installs_every_package_folder_under_one_name():
    listed = set(PYPROJECT["packages"])
    on_disk = {m for m, f in _modules().items() if f.name == "__init__.py"}
    assert listed == on_disk, f"pyproject.toml [tool.setuptools] packages is out of date: " \
                              f"missing {sorted(on_disk - listed)}, stale {sorted(listed - on_disk)}"
    assert all(p == "refocus_edge" or p.startswith("refocus_edge.") for p in listed)
    # every folder that holds package code is mapped
    for folder in ("runtime", "dof", "app", "export", "quantization", "focalstacks", "bench", "cli"):
        assert (REPO / folder / "__init__.py").is_file() and ROOTS[folder] == REPO / folder


def test_no_code_imports_the_old_top_level_names():
    """Package, benchmark, training and test code all import `refocus_edge.*`: a stray
    `import runtime` would work in a checkout (the folder is on sys.path) and fail installed."""
    offenders = []
    for path in REPO.rglob("*.py"):
        if {".git", "models", "runs", "out"} & set(path.relative_to(REPO).parts[:1]):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in OLD_TOP_LEVEL]
    assert not offenders, "import through refocus_edge instead:\n" + "\n".join(offenders)


def test_dependencies_point_one_way_and_never_into_benchmarks_or_training():
    mods = _modules()
    wrong = []
    for module, path in mods.items():
        if module == "refocus_edge":
            continue
        own = module.split(".")[1]
        for name in _imported_names(module, path):
            top = name.split(".")
            if top[0] in ("benchmarks", "training", "tests"):
                wrong.append(f"{module} imports {name} (not installed)")
            elif top[0] == "refocus_edge" and len(top) > 1 and top[1] in ROOTS and top[1] != own \
                    and top[1] not in ALLOWED[own]:
                wrong.append(f"{module} imports {name} ({own} may import only {sorted(ALLOWED[own])})")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {n for n in _imported_names(m, p) if n in mods and n != m} for m, p in mods.items()}
    assert _cycles(graph) == []


def test_importing_every_module_builds_no_model_and_writes_nothing(tmp_path):
    """No work at import time: importing every installed module, every benchmark and every training
    script constructs no torch module and opens no file for writing."""
    names = sorted(m for m in _modules() if not m.endswith(".__main__"))  # `python -m` entry points run
    for folder in ("benchmarks", "training"):
        for f in sorted((REPO / folder).glob("*.py")):
            if not f.name.startswith(("test_", "conftest")):
                names.append(f"{folder}.{f.stem}" if f.stem != "__init__" else folder)
    script = f"""
import builtins, importlib, io, sys, torch
# Third-party import-time work is theirs: load what our modules import before spying.
import diffusers, transformers
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionModelWithProjection
built, written = [], []
init = torch.nn.Module.__init__
def spy_init(self, *a, **k):
    built.append(type(self).__name__); init(self, *a, **k)
torch.nn.Module.__init__ = spy_init
real_open = builtins.open
def spy_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        written.append(str(file))
    return real_open(file, mode, *a, **k)
builtins.open = io.open = spy_open
for name in {names!r}:
    importlib.import_module(name)
print("BUILT", sorted(set(built)))
print("WRITTEN", written)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("BUILT", "WRITTEN")))
    assert lines["BUILT"] == "[]", f"modules built at import time: {lines['BUILT']}"
    assert lines["WRITTEN"] == "[]", f"files written at import time: {lines['WRITTEN']}"


def test_building_the_cli_imports_no_heavy_package():
    """`refocus --help` and argument errors stay instant: the parser imports no torch or diffusers."""
    script = ("import sys; from refocus_edge.cli.main import build_parser; build_parser(); "
              "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_wheel_holds_only_refocus_edge(tmp_path):
    """`pip install` of the project puts one import name (and the `refocus` script) on the path."""
    if shutil.which("pip") is None and subprocess.run([sys.executable, "-m", "pip", "--version"],
                                                      capture_output=True).returncode != 0:
        pytest.skip("pip is not available to build the wheel")
    src = tmp_path / "src"
    # Build from a copy without models/ and runs/ (they are not package data; copying them is slow).
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "models", "runs", "out", "*.egg-info",
                                                             "__pycache__", "build"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    if proc.returncode != 0 and "bdist_wheel" in proc.stderr + proc.stdout:
        pytest.skip("this setuptools cannot build wheels offline (needs setuptools >= 70.1)")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    wheel = next((tmp_path / "dist").glob("refocus_edge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"refocus_edge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    assert "refocus_edge/runtime/sampler.py" in names and "refocus_edge/cli/main.py" in names
    assert "refocus_edge/bench/backends.py" in names
    assert not any(n.startswith(("refocus_edge/benchmarks", "refocus_edge/training", "refocus_edge/tests"))
                   for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "refocus = refocus_edge.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()
