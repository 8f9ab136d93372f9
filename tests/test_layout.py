"""The package's architecture, checked on its source: imports only go down the wings.

run -> training -> data / models / adapters / metrics -> scores -> base utilities. Training never
imports the run layer (it gets callbacks for checkpoints and records); the plugin wing needs only
the scores; click is imported by the CLI alone and torch-pruning only where it is used; no module
imports another module's private names.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "dcwp_prune"
BASE = {"_atomic", "_registry", "_validation", "errors", "options", "version"}
ALLOWED = {
    "base": {"base"},
    "scores": {"base"},
    "metrics": {"base"},
    "models": {"base"},
    "data": {"base"},
    "adapters": {"base", "scores"},
    "training": {"base", "scores", "metrics", "models", "data", "adapters"},
    "run": {"base", "scores", "metrics", "models", "data", "adapters", "training"},
    "package": {"base", "scores", "metrics", "models", "data", "adapters", "training", "run"},
}


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "package"
    return "base" if parts[1] in BASE else parts[1]


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def imports(path: pathlib.Path, source: str = None, name: str = None):
    """``(imported module, imported names, line)`` for every import in ``path`` (or ``source`` as module ``name``)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target.startswith("dcwp_prune"):
                for n in names:  # `from . import cmnist` imports a module
                    if is_module(f"{target}.{n}"):
                        yield f"{target}.{n}", [], node.lineno
                        names = [m for m in names if m != n]
            yield target, names, node.lineno


SOURCES = sorted(PACKAGE.rglob("*.py"))


def violations(path, source=None, name=None):
    here = name or module_name(path)
    bad = []
    for target, names, line in imports(path, source, here):
        if not target.startswith("dcwp_prune"):
            continue
        if target == "dcwp_prune" and wing(here) != "package":
            bad.append(f"line {line}: imports the package root (import the defining module)")
            continue
        there = wing(target)
        if there != wing(here) and there not in ALLOWED[wing(here)]:
            bad.append(f"line {line}: {wing(here)} module imports {target} ({there})")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and target != here:
            bad.append(f"line {line}: imports private {private} from {target}")
    return bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    bad = violations(path)
    assert not bad, f"{module_name(path)}: " + "; ".join(bad)


def test_click_only_in_the_cli_and_torch_pruning_only_where_used():
    users = {}
    for path in SOURCES:
        for target, _, _ in imports(path):
            for lib in ("click", "torch_pruning"):
                if target == lib or target.startswith(lib + "."):
                    users.setdefault(lib, set()).add(module_name(path))
    assert users["click"] == {"dcwp_prune.run.cli"}
    assert users["torch_pruning"] <= {"dcwp_prune.adapters.torch_pruning", "dcwp_prune.adapters.structured"}


def test_the_checker_reports_each_kind_of_violation():
    """The rule is not vacuous: upward, sideways, root and private imports are all reported."""
    path = PACKAGE / "training" / "mask.py"
    source = (
        "from ..run.checkpoint import save_checkpoint\n"  # training -> run: upward
        "from .. import MaskScores\n"  # the package root
        "from .engine import _finite\n"
    )  # a private name
    bad = violations(path, source, "dcwp_prune.training.mask")
    assert len(bad) == 3 and "run.checkpoint" in bad[0] and "package root" in bad[1] and "_finite" in bad[2]
    sideways = violations(
        PACKAGE / "adapters" / "structured.py", "from ..models import create_model\n", "dcwp_prune.adapters.structured"
    )
    assert sideways == ["line 1: adapters module imports dcwp_prune.models (models)"]
    assert (
        violations(path, "from ..scores import MaskScores\nfrom .engine import Engine\n", "dcwp_prune.training.mask")
        == []
    )
