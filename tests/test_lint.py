"""The repository passes `ruff check` with the rules of pyproject.toml's [tool.ruff] (ruff comes with the dev extra)."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
    # --no-cache: the check writes nothing into the repository.
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"ruff check . failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
