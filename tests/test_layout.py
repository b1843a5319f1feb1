"""The package's shape (issue 11): no import cycle, a core that needs only the core dependencies, benchmarks that
use only the public API. Everything here reads the source with ``ast``; nothing of the package is imported."""

from __future__ import annotations

import sys
import textwrap
import warnings
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


def test_function_level_import_cycles_are_reported(graph):
    """Not a failure (the imports run lazily), but two modules that import each other are one job in two files:
    they are listed in pytest's warnings summary so that they get looked at."""
    lazy = [
        c
        for c in cycles(graph.edges(module_level_only=False))
        if c not in cycles(graph.edges(module_level_only=True))
    ]
    for component in lazy:
        warnings.warn(f"function-level import cycle: {' <-> '.join(component)}", stacklevel=1)


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
