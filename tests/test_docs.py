"""The documentation builds with no warning, and documents every public name of every public module.

Public here is what `docs/api/index.rst` promises, computed again independently of the generator in
`docs/_ext/ltjax_docs.py`: a module is public when no part of its dotted name starts with `_`; its public names are
its `__all__`, or, without one, the names its top-level statements define that do not start with `_`. A name counts
as documented when the built inventory (`objects.inv`) holds it under its module, or under another public module
that makes the same object public (a package that re-exports it).
"""
import ast
import importlib
import os
import pathlib
import pkgutil
import subprocess
import sys
import zlib

import pytest

import ltjax
from ltjax import methods

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT_S = 300


def public_modules() -> list[str]:
    names = ["ltjax"] + [info.name for info in pkgutil.walk_packages(ltjax.__path__, "ltjax.")]
    return sorted(name for name in names if not any(part.startswith("_") for part in name.split(".")))


def _defined(statements) -> list[str]:
    names = []
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [leaf.id for target in node.targets for leaf in ast.walk(target) if isinstance(leaf, ast.Name)]
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, (ast.If, ast.Try)):
            names += _defined(node.body) + _defined(node.orelse)
            names += _defined(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                names += _defined(handler.body)
    return names


def public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse(pathlib.Path(module.__file__).read_text(encoding="utf-8"))
    return sorted({name for name in _defined(tree.body) if not name.startswith("_") and hasattr(module, name)})


def read_inventory(path: pathlib.Path) -> dict[str, str]:
    """`name -> domain:role` of a Sphinx objects.inv (version 2: four header lines, then zlib-compressed lines)."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    entries = {}
    for line in zlib.decompress(data[header_end:]).decode("utf-8").splitlines():
        name, role = line.split(" ", 2)[:2]
        entries[name] = role
    return entries


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("docs_html")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # the build writes nothing into the repository
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-6000:]}\n{result.stdout[-2000:]}"
    return out


def test_the_docs_build_with_warnings_as_errors(built):
    for page in ("index", "guides", "config_keys", "add_a_method", "contributing", "methods/index", "api/index"):
        assert (built / f"{page}.html").is_file(), page


def test_every_top_level_module_has_an_api_page():
    missing = [name for name in public_modules()
               if name.count(".") == 1 and not (DOCS / "api" / f"{name.split('.')[1]}.rst").is_file()]
    assert not missing, (
        "add a page per module, docs/api/<name>.rst holding the one line `.. ltjax-module:: ltjax.<name>`: "
        + ", ".join(missing))


def test_every_public_name_of_every_public_module_is_documented(built):
    inventory = read_inventory(built / "objects.inv")
    modules = {name: importlib.import_module(name) for name in public_modules()}
    publics = {module_name: public_names(module) for module_name, module in modules.items()}
    missing = [name for name in modules if inventory.get(name) != "py:module"]
    for module_name, module in modules.items():
        for name in publics[module_name]:
            value = getattr(module, name)
            places = [other for other, candidate in modules.items()
                      if name in publics[other] and getattr(candidate, name, None) is value]
            if f"{module_name}.{name}" not in inventory and not any(f"{p}.{name}" in inventory for p in places):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public but not in the built API reference: {', '.join(missing)}"


def test_every_method_of_the_registry_has_a_page_and_its_config_keys(built):
    missing = [name for name in methods.names() if not (built / "methods" / f"{name}.html").is_file()]
    assert not missing, f"no page for the methods {missing}"
    keys_page = (built / "config_keys.html").read_text(encoding="utf-8")
    for name in methods.names():
        assert f"loss.name={name}" in keys_page
        for key in methods.get(name).keys:
            assert f"loss.{key}" in keys_page, f"{name}: loss.{key}"
