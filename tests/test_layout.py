"""The import rules of ARCHITECTURE.md ("Layout"), read from the code's own imports (AST).

Each rule names what it forbids; a module that breaks one fails here with the offending import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fedlatent

PACKAGE = Path(fedlatent.__file__).parent
APPS = {"fedlatent.federation.client_app", "fedlatent.federation.server_app"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), and ``module.name`` of from-imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: imports(path) for name, path in MODULES.items()}


def in_layer(name: str, *layers: str) -> bool:
    return any(name == f"fedlatent.{layer}" or name.startswith(f"fedlatent.{layer}.") for layer in layers)


def offending(layers: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Modules of ``layers`` that import a module starting with one of ``forbidden``."""
    bad = {}
    for name, found in IMPORTS.items():
        if in_layer(name, *layers):
            hits = sorted(i for i in found if any(i == f or i.startswith(f + ".") for f in forbidden))
            if hits:
                bad[name] = hits
    return bad


def test_the_scan_sees_every_subpackage_and_its_imports():
    for layer in ("data", "learning", "privacy", "federation", "launch", "attacks"):
        assert any(in_layer(name, layer) for name in MODULES), layer
    assert "fedlatent.federation.payloads" in IMPORTS["fedlatent.federation.strategy"]
    assert "flwr.app" in IMPORTS["fedlatent.federation.payloads"]


@pytest.mark.parametrize("layer", ["data", "learning", "privacy"])
def test_lower_layers_import_no_flower(layer):
    assert offending((layer,), ("flwr", "flwr_datasets")) == {}


@pytest.mark.parametrize("layer", ["data", "learning", "privacy"])
def test_lower_layers_never_reach_up(layer):
    # The config is passed down as keyword arguments (plan.py maps it); nothing below it imports it.
    above = ("fedlatent.config", "fedlatent.plan", "fedlatent.federation", "fedlatent.attacks", "fedlatent.launch")
    above += ("fedlatent.cli", "fedlatent.bench")
    assert offending((layer,), above) == {}


def test_launch_imports_nothing_that_trains():
    trains = ("torch", "opacus", "fedlatent.learning", "fedlatent.privacy", "fedlatent.federation", "fedlatent.plan")
    assert offending(("launch",), (*trains, "fedlatent.attacks", "fedlatent.config")) == {}


def test_nothing_imports_an_app():
    users = {name: sorted(found & APPS) for name, found in IMPORTS.items() if found & APPS}
    for folder in ("experiments", "tests"):
        for path in (PACKAGE.parent / folder).rglob("*.py"):
            if hits := {i for i in imports_of_file(path) if i in APPS}:
                users[str(path)] = sorted(hits)
    assert users == {}


def imports_of_file(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def test_attacks_read_a_run_only_through_the_server_view():
    federation = {
        name: sorted(i for i in found if in_layer(i, "federation") and not in_layer(i, "federation.server_view"))
        for name, found in IMPORTS.items()
        if in_layer(name, "attacks")
    }
    assert {k: v for k, v in federation.items() if v} == {}


ATTACK_MODULES = sorted(n for n in MODULES if in_layer(n, "attacks") and not in_layer(n, "attacks.scoring"))


@pytest.mark.parametrize("name", ATTACK_MODULES)
def test_only_scoring_reaches_the_private_records(name):
    # An attack that imported the Truth, or the private index it is loaded from, could score
    # itself on what it must not see. The runner is where the two sides meet: it loads the Truth
    # through the scorer after an attack returned, so it alone may import scoring.
    if name != "fedlatent.attacks.run":
        assert not {i for i in IMPORTS[name] if i.startswith(("fedlatent.attacks.scoring", "fedlatent.attacks.run"))}
    assert "private_index" not in MODULES[name].read_text()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable_in_one_sitting(name):
    assert len(MODULES[name].read_text().splitlines()) <= 300
