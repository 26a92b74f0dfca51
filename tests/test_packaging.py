"""The distributions ltjax builds: the sdist and the wheel pass `twine check`; the wheel, installed beside the core's
dependencies alone (JAX and NumPy, with what they need), runs README's loss snippet and names the training extra when
asked for training; installed beside the training extra, it finds every recipe README names and trains.

No network: the wheel is built without build isolation and installed with `--no-index`; the environments are
interpreters started with `-I -S` (no site-packages) whose path holds the wheel's install and the installed
distributions' own files.
"""
from __future__ import annotations

import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
CORE_DISTRIBUTIONS_AT_MOST = 12
README_LOSS_SNIPPET = """
import jax, jax.numpy as jnp, numpy as np
from ltjax import losses
from ltjax.stats import ClassStats

stats = ClassStats.from_counts([500, 50, 5])
logits = jax.random.normal(jax.random.key(0), (4, 3))
labels = jnp.array([0, 1, 2, 0])

def loss_fn(logits):
    per_example = losses.logit_adjusted_loss(logits, labels, class_priors=stats.prior)
    return losses.mean(per_example)

value, grads = jax.jit(jax.value_and_grad(loss_fn))(logits)
assert np.isfinite(value) and grads.shape == (4, 3), (value, grads)
print("loss", float(value))
"""


def _run(command: list[str], cwd: pathlib.Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _requirement_name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions `requirements` (without extras or markers that exclude this platform) need,
    transitively."""
    from packaging.requirements import Requirement

    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = _normalized(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in importlib.metadata.distribution(name).requires or [])
    return seen


def _site_of(distributions: set[str], folder: pathlib.Path) -> pathlib.Path:
    """A folder holding links to the installed top-level packages and metadata of `distributions` only."""
    folder.mkdir()
    for name in distributions:
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            top = pathlib.Path(file).parts[0]
            if top.endswith(".pth") or top == ".." or (folder / top).exists():
                continue
            source = pathlib.Path(distribution.locate_file(top))
            if source.exists():
                (folder / top).symlink_to(source)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, pathlib.Path]:
    out = tmp_path_factory.mktemp("dist")
    # A copy of the sources: a build in place writes build/ and *.egg-info into the checkout, where another test
    # process (pytest-xdist) may be building at the same time.
    sources = shutil.copytree(REPOSITORY, out / "sources", ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "_build", "__pycache__", ".pytest_cache", "dist"))
    result = _run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out),
                   str(sources)], cwd=out, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheel, = out.glob("ltjax-*.whl")
    sdist, = out.glob("ltjax-*.tar.gz")
    install = out / "install"
    result = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                   str(install), str(wheel)], cwd=out)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"wheel": wheel, "sdist": sdist, "install": install, "out": out}


def _python(paths: list[pathlib.Path], code: str, cwd: pathlib.Path, timeout: float = 300):
    """Runs `code` in an interpreter that sees the standard library and `paths` only."""
    prelude = f"import sys; sys.path[:0] = {[str(path) for path in paths]!r}\n"
    return _run([sys.executable, "-I", "-S", "-c", prelude + code], cwd=cwd, timeout=timeout)


def test_twine_accepts_the_sdist_and_the_wheel(built):
    result = _run([sys.executable, "-m", "twine", "check", "--strict", str(built["sdist"]), str(built["wheel"])],
                  cwd=built["out"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_holds_the_license_the_type_marker_and_every_package():
    """Every package of ltjax/ is named in pyproject.toml (setuptools lists them there, beside experiments/)."""
    listed = set(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(path.parent.relative_to(REPOSITORY).parts) for path in (REPOSITORY / "ltjax").rglob(
        "__init__.py")}
    assert packages <= listed, f"add {sorted(packages - listed)} to [tool.setuptools] packages in pyproject.toml"


def test_the_wheel_contents(built):
    import zipfile

    names = zipfile.ZipFile(built["wheel"]).namelist()
    assert "ltjax/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)
    for folder in ("experiments/configs", "experiments/tables"):
        expected = {f"ltjax/{folder}/{path.name}" for path in (REPOSITORY / folder).glob("*.py")}
        assert expected and expected <= set(names), sorted(expected - set(names))
    modules = {str(path.relative_to(REPOSITORY)) for path in (REPOSITORY / "ltjax").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))


def test_the_core_install_is_small_and_runs_the_readme_loss_snippet(built, tmp_path):
    metadata = importlib.metadata.PathDistribution(next(built["install"].glob("ltjax-*.dist-info")))
    core = [requirement for requirement in metadata.requires if "extra ==" not in requirement]
    assert sorted(_normalized(_requirement_name(r)) for r in core) == ["jax", "numpy"], core
    needed = _closure(core)
    assert len(needed) + 1 <= CORE_DISTRIBUTIONS_AT_MOST, sorted(needed)
    site = _site_of(needed, tmp_path / "site")
    result = _python([built["install"], site], README_LOSS_SNIPPET, cwd=tmp_path)
    assert result.returncode == 0 and "loss" in result.stdout, result.stderr[-3000:]
    for module in ("ltjax.stats", "ltjax.posthoc", "ltjax.dynasmooth", "ltjax.schedules", "ltjax.testing"):
        result = _python([built["install"], site], f"import {module}", cwd=tmp_path)
        assert result.returncode == 0, (module, result.stderr[-3000:])


@pytest.mark.parametrize("module", ["ltjax.train", "ltjax.data", "ltjax.methods", "ltjax.tables", "ltjax.plots"])
def test_a_training_module_without_the_extra_names_the_extra(module, built, tmp_path):
    metadata = importlib.metadata.PathDistribution(next(built["install"].glob("ltjax-*.dist-info")))
    site = _site_of(_closure([r for r in metadata.requires if "extra ==" not in r]), tmp_path / "site")
    result = _python([built["install"], site], f"import {module}", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[-1].startswith("ImportError: "), result.stderr[-3000:]
    assert f"{module} needs ltjax's training extra" in lines[-1] and "pip install 'ltjax[train]'" in lines[-1]


def test_the_training_install_finds_every_readme_recipe_and_trains(built, tmp_path):
    """README names recipes and table specs by their path in the checkout; from a wheel they resolve to the package."""
    readme = (REPOSITORY / "README.md").read_text()
    named = sorted(set(re.findall(r"\b((?:experiments|ltjax)/(?:configs|tables)/\w+\.py)", readme)))
    assert any(name.startswith("experiments/configs/") for name in named), named
    metadata = importlib.metadata.PathDistribution(next(built["install"].glob("ltjax-*.dist-info")))
    train = [r for r in metadata.requires if "extra ==" not in r or re.search(r"extra == .train.", r)]
    site = _site_of(_closure([r.split(";")[0] for r in train]), tmp_path / "site")
    code = (f"from ltjax.configs import files\nfor spec in {named!r}:\n"
            "    module = files.load_module(spec)\n"
            "    assert hasattr(module, 'get_config') or hasattr(module, 'get_table'), spec\n"
            "    print(module.__file__)\n")
    result = _python([built["install"], site], code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(str(built["install"]) in line for line in result.stdout.splitlines()), result.stdout
    main = ("import sys\nfrom ltjax.train.main import run\n"
            "sys.argv = ['ltjax-train', '--workdir=run', '--config.num_epochs=1', '--config.progress_bar=False']\n"
            "run()")
    result = _python([built["install"], site], main, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "report.json").is_file()


def test_the_changelog_has_an_entry_for_the_version():
    import ltjax

    changelog = (REPOSITORY / "CHANGELOG.md").read_text()
    assert f"## [{ltjax.__version__}] - " in changelog, f"add a '## [{ltjax.__version__}] - <date>' entry"
