"""pyproject.toml: every package the code imports is declared, and the build is quiet."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from tests.conftest import REPO

CODE = ("flows", "tasks", "storage", "bench")
OWN_MODULES = {*CODE, "_typeshed"}  # _typeshed: type-checking only


def _imported_modules(folder: Path) -> set[str]:
    """The top-level names of the absolute imports in every module under `folder`."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _names(project["dependencies"])
    # The benchmarks run from a checkout set up with the dev extras (`make setup`).
    development = runtime | _names(project["optional-dependencies"]["dev"])
    distributions = metadata.packages_distributions()
    undeclared = {}
    for folder in CODE:
        declared = development if folder == "bench" else runtime
        third_party = _imported_modules(REPO / folder) - OWN_MODULES - set(sys.stdlib_module_names)
        for module in sorted(third_party):
            found = {_normalized(dist) for dist in distributions.get(module, [module])}
            if not declared & found:
                undeclared[f"{folder}: {module}"] = distributions.get(module, [module])
    assert undeclared == {}


def _names(requirements: list[str]) -> set[str]:
    return {_normalized(re.split(r"[<>=!~\[ ;]", requirement)[0]) for requirement in requirements}


def test_the_wheel_builds_without_warnings_and_ships_the_gallery_templates(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".*", "__pycache__", "out", "build", "*.egg-info"),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "Warning" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    assert {"tasks/templates/gallery.html.j2", "tasks/templates/gallery.js"} <= set(shipped)
