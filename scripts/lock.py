"""Write or check the lock file: the exact versions of every package in a venv the suite passed in.

Run as: .venv/bin/python scripts/lock.py freeze > constraints.txt   (what `make lock` does)
        .venv/bin/python scripts/lock.py check constraints.txt     (what `make setup` does)
        .venv/bin/python scripts/lock.py diff constraints.txt      (what `make test-latest` prints)

`freeze` lists every installed distribution but tuneforge itself as `name==version`, local version
labels dropped (`torch==2.13.0+cpu` is locked as `torch==2.13.0`, which the CPU wheel satisfies
without naming a local build a user's machine lacks). `check` exits 1 naming each package whose
installed version differs from the lock, so a venv that drifted is never tested as if it were locked.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

OWN = "tuneforge"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Every installed distribution (pip included) as canonical name -> public version."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) != OWN:
            found[canonical(name)] = dist.version.split("+", 1)[0]
    return found


def read_lock(path: Path) -> dict[str, str]:
    locked: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            sys.exit(f"{path}:{number}: expected name==version, got {line!r}")
        locked[canonical(name)] = version.strip()
    return locked


def freeze() -> str:
    lines = [
        "# Exact versions the test suite last passed with (make setup and CI install these).",
        "# Regenerate with `make lock`, which first runs the suite on the newest versions the",
        "# pyproject ranges allow (make test-latest) and locks only if it passes.",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(installed().items())]
    return "\n".join(lines) + "\n"


def differences(lock: Path) -> tuple[list[str], list[str]]:
    """(packages whose version differs from the lock or are missing from it, locked packages not installed)"""
    locked, have = read_lock(lock), installed()
    differ = [
        f"{name} {have[name]} (locked: {locked.get(name, 'not in the lock')})"
        for name in sorted(have)
        if locked.get(name) != have[name]
    ]
    missing = [name for name in sorted(locked) if name not in have]
    return differ, missing


def main(argv: list[str]) -> int:
    if argv[:1] == ["freeze"]:
        sys.stdout.write(freeze())
        return 0
    if len(argv) == 2 and argv[0] in ("check", "diff"):
        lock = Path(argv[1])
        differ, missing = differences(lock)
        if argv[0] == "diff":
            print(f"{len(differ)} package(s) differ from {lock}" + (":" if differ else ""))
            for line in differ:
                print(f"  {line}")
            return 0
        # Locked packages that are not installed are fine (an optional extra); drifted ones are not.
        drifted = [line for line in differ if "not in the lock" not in line]
        extra = [line for line in differ if "not in the lock" in line]
        for line in extra:
            print(f"note: {line}: installed by hand, not part of the locked set")
        if drifted:
            print(f"{len(drifted)} package(s) differ from {lock}:", *drifted, sep="\n  ")
            print(f"Remove the venv and run `make setup` again to install exactly {lock}.")
            return 1
        print(f"{len(read_lock(lock)) - len(missing)} packages match {lock}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
