"""The package's shape (issue 11): no import cycle, a core that needs only the core dependencies, benchmarks that
use only the public API. Everything here reads the source with ``ast``; nothing of the package is imported."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.import_graph import Graph, build_graph, cycles, module_level_closure

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "saferclip_diffusers"

# What `pip install saferclip-diffusers` brings (pyproject's [project] dependencies), by import name.
CORE_DISTRIBUTIONS = {
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "huggingface_hub",
    "accelerate",
    "peft",
    "numpy",
    "PIL",
    "tqdm",
}
# The modules a core install must be able to import: the package itself, the pipelines and what they stand on.
CORE_MODULES = (
    "saferclip_diffusers",
    "saferclip_diffusers._compat",
    "saferclip_diffusers._extras",
    "saferclip_diffusers.io",
    "saferclip_diffusers.devices",
    "saferclip_diffusers.hub",
    "saferclip_diffusers.options",
    "saferclip_diffusers.presets",
    "saferclip_diffusers.data",
)
CORE_PREFIXES = ("saferclip_diffusers.pipelines", "saferclip_diffusers.encoders", "saferclip_diffusers.tiny")
# Issue 11: "no module over about 300 lines", one job each, so that a reader sees a module's whole job at once.
# 300 is the target; the 10% margin spares a module a split over a docstring paragraph, not over a second job.
MAX_MODULE_LINES = 330


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(PACKAGE)


def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_graph_finds_a_module_level_cycle_and_tells_it_from_a_lazy_one(tmp_path):
    root = _write_package(
        tmp_path,
        {
            "a.py": "from . import b\n",
            "b.py": "from .sub.c import thing\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a\nthing = 1\n",
            "lazy1.py": "def f():\n    from .lazy2 import g\n",
            "lazy2.py": "from .lazy1 import f\ndef g(): pass\n",
            "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
        },
    )
    graph = build_graph(root)
    assert cycles(graph.edges(module_level_only=True)) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert cycles(graph.edges(module_level_only=False)) == [
        ["pkg.a", "pkg.b", "pkg.sub.c"],
        ["pkg.lazy1", "pkg.lazy2"],
    ]
    assert "pkg.a" not in graph.edges(module_level_only=False)["pkg.typed"]  # TYPE_CHECKING imports never run


def test_graph_resolves_relative_imports_of_packages_and_submodules(tmp_path):
    root = _write_package(
        tmp_path,
        {
            "tools/__init__.py": "from .x import y\nfrom .. import core\n",
            "tools/x.py": "from ..core import helper\ntry:\n    import pandas\nexcept ImportError:\n    pandas = None\n",
            "core.py": "import os\nimport gradio\n",
        },
    )
    graph = build_graph(root)
    edges = graph.edges(module_level_only=True)
    assert edges["pkg.tools"] == {"pkg.tools.x", "pkg.core"}
    assert edges["pkg.tools.x"] == {"pkg.core"}
    optional = {i.target: i.optional for i in graph.imports["pkg.tools.x"]}
    assert optional == {"pkg.core": False, "pandas": True}
    assert module_level_closure(graph, ["pkg.tools.x"]) == {"pkg", "pkg.tools", "pkg.tools.x", "pkg.core"}


def test_no_module_level_import_cycle(graph):
    found = cycles(graph.edges(module_level_only=True))
    assert not found, (
        "module-level import cycles (break them: move the import into the function that needs it, "
        f"or move the shared piece into its own module): {found}"
    )


def test_no_function_level_import_cycle(graph):
    """Lazy imports do not deadlock, but two modules that import each other are one job in two files (issue 11:
    "no circle between the trainer and the export module"): split the shared piece into its own module."""
    module_level = cycles(graph.edges(module_level_only=True))
    lazy = [c for c in cycles(graph.edges(module_level_only=False)) if c not in module_level]
    assert not lazy, "function-level import cycles: " + "; ".join(" <-> ".join(c) for c in lazy)


def _is_core(module: str) -> bool:
    return module in CORE_MODULES or any(module == p or module.startswith(p + ".") for p in CORE_PREFIXES)


def test_core_modules_import_no_tool_dependency_at_module_level(graph):
    core = [m for m in graph.files if _is_core(m)]
    assert "saferclip_diffusers.presets" in core and any(m.startswith(CORE_PREFIXES[0]) for m in core)
    bad = []
    for module in sorted(module_level_closure(graph, core)):
        for imp in graph.imports[module]:
            top = imp.target.split(".")[0]
            if not imp.module_level or imp.optional or top == "saferclip_diffusers":
                continue
            if top not in CORE_DISTRIBUTIONS and top not in sys.stdlib_module_names:
                bad.append(f"{graph.files[module].relative_to(ROOT)}:{imp.line} imports {imp.target}")
    assert not bad, (
        "a core module (or a module it imports at module level) needs a tool dependency on import; "
        "import it inside the function that uses it, behind saferclip_diffusers._extras.require_extra:\n"
        + "\n".join(bad)
    )


def test_no_core_module_reaches_a_tool_package_on_import(graph):
    reached = module_level_closure(graph, [m for m in graph.files if _is_core(m)])
    tools = sorted(m for m in reached if not _is_core(m))
    assert not tools, f"importing the core runs these tool modules too: {tools}"


def long_modules(root: Path, limit: int) -> list[str]:
    """``path: N lines`` for every ``.py`` file under ``root`` longer than ``limit`` lines, longest first."""
    sizes = [(len(p.read_text(encoding="utf-8").splitlines()), p) for p in root.rglob("*.py")]
    return [f"{p.relative_to(root.parent)}: {n} lines" for n, p in sorted(sizes, reverse=True) if n > limit]


def test_long_modules_finds_exactly_the_files_over_the_limit(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "at_limit.py").write_text("x = 1\n" * 5)
    (pkg / "sub" / "over.py").write_text("x = 1\n" * 6)
    (pkg / "notes.txt").write_text("x\n" * 50)
    assert long_modules(pkg, 5) == [f"pkg{os.sep}sub{os.sep}over.py: 6 lines"]


def test_no_module_is_longer_than_the_budget():
    too_long = long_modules(PACKAGE, MAX_MODULE_LINES)
    assert not too_long, (
        f"modules over {MAX_MODULE_LINES} lines (issue 11: about 300, one job each); split each by job and keep "
        "its public names importable from the old module:\n" + "\n".join(too_long)
    )


def test_benchmarks_use_only_the_public_api():
    bench = build_graph(ROOT / "bench", "bench")
    private = [
        f"{path.relative_to(ROOT)}:{imp.line} imports {imp.target}" + (f".{imp.name}" if imp.name else "")
        for module, path in bench.files.items()
        for imp in bench.imports[module]
        if imp.target.startswith("saferclip_diffusers")
        and any(p.startswith("_") for p in [*imp.target.split("."), imp.name or ""])
    ]
    assert not private, f"bench/ reaches into private modules of the library: {private}"
    assert not any(p.name == "benchmarks" for p in PACKAGE.iterdir()), (
        "benchmarks live in bench/, not the package"
    )
