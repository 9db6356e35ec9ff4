"""The lock file agrees with pyproject's ranges, and the venv the tests run in is the locked one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
PINNED = ("transformers", "peft", "trl", "accelerate", "datasets")

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def locked() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from lock import read_lock
    finally:
        sys.path.pop(0)
    return read_lock(LOCK)


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_every_locked_dependency_satisfies_its_pyproject_range():
    versions = locked()
    for requirement in requirements():
        name = requirement.name.lower()
        assert name in versions, f"{name} is a dependency but not in {LOCK.name}"
        assert requirement.specifier.contains(versions[name], prereleases=True), (requirement, versions[name])


def test_internals_we_override_are_held_to_the_tested_minor():
    by_name = {r.name.lower(): r for r in requirements()}
    versions = locked()
    for name in PINNED:
        major, minor = versions[name].split(".")[:2]
        next_minor = f"{major}.{int(minor) + 1}"
        assert by_name[name].specifier.contains(f"{major}.{minor}.0")
        assert not by_name[name].specifier.contains(f"{next_minor}.0"), (
            f"{name} admits the untested {next_minor}"
        )


@pytest.mark.skipif(not (ROOT / ".venv" / ".setup-done").exists(), reason="runs inside make setup's venv")
def test_the_venv_matches_the_lock():
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not running in the project's .venv (e.g. make test-latest)")
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock.py"), "check", str(LOCK)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
