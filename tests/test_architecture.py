"""The package's layout rules (docs/architecture.md), checked on the source itself.

Imports run downward only: cli -> engines/learners/analysis -> calculators -> models ->
descriptors -> data. A calculator never imports a learner or an engine, a model never imports
its trainer, analysis never imports a run's machinery, and no module reaches into another
module's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "potlearn_ase"

#: top-level folder -> folders it must never import (anywhere in the module, lazily or not)
FORBIDDEN = {
    "data": {"descriptors", "models", "calculators", "training", "learners", "engines",
             "analysis", "selection", "cli"},
    "descriptors": {"models", "calculators", "training", "learners", "analysis", "selection",
                    "cli"},
    "models": {"training", "calculators", "learners", "engines", "analysis", "cli"},
    "calculators": {"training", "learners", "engines", "analysis", "selection", "cli"},
    "training": {"calculators", "learners", "engines", "analysis", "cli"},
    "selection": {"models", "calculators", "training", "learners", "engines", "analysis", "cli"},
    "analysis": {"learners", "engines", "training", "cli"},
    "learners": {"engines", "cli"},
    "engines": {"cli"},
}

#: the one module below ``engines`` may import from it: the LAMMPS library loader, a leaf
#: (it imports only ``data`` and ``errors``) that the SNAP descriptor needs: it computes the
#: bispectrum through LAMMPS
LEAF_EXCEPTIONS = {
    "potlearn_ase.engines.lammps.library",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) of every import statement, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            base = _name(path).split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((node.lineno, module, [a.name for a in node.names]))
    return out


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "potlearn_ase" else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path: Path) -> None:
    own = _folder(_name(path))
    forbidden = FORBIDDEN.get(own or "", set())
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for line, module, _ in _imports(path)
        if _folder(module) in forbidden and module not in LEAF_EXCEPTIONS
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_across_modules(path: Path) -> None:
    me = _name(path)
    bad = []
    for line, module, names in _imports(path):
        if not module.startswith("potlearn_ase") or module == me:
            continue
        bad += [f"{path.name}:{line} imports {module}.{n}" for n in names
                if n.startswith("_") and not n.startswith("__") and n != "_moved"]
    assert not bad, "\n".join(bad)


def test_leaf_exceptions_are_leaves() -> None:
    for module in LEAF_EXCEPTIONS:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        inner = {m for _, m, _ in _imports(path) if m.startswith("potlearn_ase")}
        assert all(_folder(m) in {"errors", "data"} for m in inner), f"{module}: {sorted(inner)}"


def test_argparse_only_in_cli() -> None:
    bad = [
        str(p.relative_to(PACKAGE.parent))
        for p in _modules()
        if _folder(_name(p)) != "cli" and any(m == "argparse" for _, m, _ in _imports(p))
    ]
    assert not bad, f"argparse outside potlearn_ase/cli/: {bad}"


def test_calculators_hold_the_calculator_only() -> None:
    names = sorted(p.name for p in (PACKAGE / "calculators").glob("*.py"))
    assert names == ["__init__.py", "committee.py"]


def test_one_folder_per_engine_and_for_the_command_line() -> None:
    for folder in ("engines/lammps", "engines/ipi", "cli", "learners/triggers", "calculators"):
        assert (PACKAGE / folder / "__init__.py").exists(), folder
    assert not (PACKAGE / "cli.py").exists()
    assert not (PACKAGE / "lammpsutil.py").exists()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_hold_one_idea(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= 460, f"{path.relative_to(PACKAGE.parent)} has {n} lines (one idea per file)"


def test_old_import_paths_still_work_with_a_warning() -> None:
    import importlib
    import sys

    import potlearn_ase  # noqa: F401  (installs the finder)

    sys.modules.pop("potlearn_ase.lammpsutil", None)
    with pytest.warns(DeprecationWarning, match="engines.lammps.library"):
        old = importlib.import_module("potlearn_ase.lammpsutil")
    from potlearn_ase.engines.lammps import library

    assert old is library
    with pytest.warns(DeprecationWarning, match="models.posterior"):
        from potlearn_ase.training import NormalEquations
    from potlearn_ase.models import NormalEquations as new

    assert NormalEquations is new


def test_public_surface() -> None:
    import potlearn_ase

    for name in ("CommitteeCalculator", "load", "ACEDescriptor", "ACEConfig", "fit_linear",
                 "cross_validated_calibration", "LabelStore", "OnTheFlyLearner", "Reference",
                 "run_otf"):
        assert name in potlearn_ase.__all__
        assert getattr(potlearn_ase, name) is not None


def _private_definitions(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, attributes it assigns."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def test_no_private_attributes_of_other_modules() -> None:
    """``obj._name`` only where ``_name`` belongs to the same module (``run._fit``,
    ``model._solve`` from another module are what this forbids)."""
    trees = {p: ast.parse(p.read_text()) for p in _modules()}
    own = {p: _private_definitions(t) for p, t in trees.items()}
    bad = []
    for path, tree in trees.items():
        elsewhere = set().union(*(v for q, v in own.items() if q != path)) - own[path]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or node.attr not in elsewhere:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} uses .{node.attr}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_an_old_path() -> None:
    from potlearn_ase._moved import MOVED_MODULES

    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in _modules()
        if path.name != "_moved.py"
        for line, module, _ in _imports(path)
        if module in MOVED_MODULES
    ]
    assert not bad, "\n".join(bad)
