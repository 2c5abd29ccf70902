"""The import directions docs/INTERFACES.md names, read from every module's imports (AST), so the next drift fails CI.

Layers, lowest first: protocol (a leaf) → rewards, ledger → quality → pipelines → engine → simulation, assets →
tributary (the CLI) and benchmarks. A package may import only the ones listed for it; imports inside functions
count too (a lazy import is still a dependency). Dagster lives in assets/, Beam in pipelines/, GX in quality/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"protocol", "rewards", "ledger", "quality", "pipelines"}
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "rewards": {"protocol"},
    "ledger": {"protocol"},
    "quality": {"protocol", "rewards"},
    "pipelines": {"protocol", "rewards", "quality"},
    "engine": CORE,
    "simulation": CORE | {"engine"},
    "assets": CORE | {"engine"},
    "tributary": CORE | {"engine", "simulation"},
    "benchmarks": CORE | {"engine", "simulation"},
}
# Third-party frameworks each confined to the one package that wraps them.
FRAMEWORKS = {"dagster": {"assets"}, "dagster_webserver": {"assets"}, "apache_beam": {"pipelines"},
              "great_expectations": {"quality"}}


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of the file (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def violations(root: Path) -> list[str]:
    """One line per import against the rules, in every package of ALLOWED found under `root`."""
    ours = set(ALLOWED)
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for name in sorted(imports_of(path)):
                where = path.relative_to(root)
                if name in ours and name != package and name not in allowed:
                    bad.append(f"{where} imports {name}: {package} may import only {sorted(allowed) or 'nothing of ours'}")
                if name in FRAMEWORKS and package not in FRAMEWORKS[name]:
                    bad.append(f"{where} imports {name}: only {sorted(FRAMEWORKS[name])} may")
    return bad


def test_every_package_imports_only_the_layers_below_it() -> None:
    assert violations(ROOT) == []


def test_every_package_of_ours_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(ALLOWED), f"give {sorted(packages - set(ALLOWED))} a layer in ALLOWED and INTERFACES.md"


@pytest.mark.parametrize("source, target", [("ledger/x.py", "engine"), ("engine/x.py", "tributary"),
                                            ("assets/x.py", "tributary"), ("protocol/x.py", "rewards"),
                                            ("rewards/x.py", "dagster"), ("engine/x.py", "apache_beam")])
def test_a_wrong_direction_is_caught(tmp_path: Path, source: str, target: str) -> None:
    # The checker itself: a lazy import against the rules, inside a function, is reported naming file and target.
    path = tmp_path / source
    path.parent.mkdir(parents=True)
    path.write_text(f"def f():\n    from {target}.thing import x\n")
    assert [line.split(":")[0] for line in violations(tmp_path)] == [f"{source} imports {target}"]
