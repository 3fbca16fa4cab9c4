"""CI: the installed environment is exactly requirements.lock (what `make` installs).

Compares every installed distribution's version with the lock's pins and fails, naming each
difference, when a package is missing, extra or at another version. pip's own tooling (pip,
setuptools, wheel) and the project itself (installed editable, not pinned) are not compared.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
UNPINNED = {"pip", "setuptools", "wheel", "distribute", "genstudy"}


def norm(name: str) -> str:
    """PEP 503 normalized name: 'Foo_Bar.baz' -> 'foo-bar-baz'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """{name: version} of the lock's 'name==version' lines (comments and blanks skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"requirements.lock: {line!r} is not pinned as name==version")
            out[norm(name)] = version.strip()
    return out


def differences(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per package that is missing, extra or at another version than the lock's."""
    out = []
    for name in sorted(set(locked) | set(installed) - UNPINNED):
        want, have = locked.get(name), installed.get(name)
        if name in UNPINNED or want == have:
            continue
        out.append(f"{name}: installed {have or 'nothing'}, the lock pins {want or 'nothing'}")
    return out


def installed() -> dict[str, str]:
    return {norm(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def main() -> int:
    diff = differences(pins(LOCK.read_text()), installed())
    if diff:
        print("locked: the installed packages differ from requirements.lock (install with `make install`, "
              "refresh the lock with `make lock`):\n  " + "\n  ".join(diff), file=sys.stderr)
        return 1
    print(f"locked: every installed package is at the version requirements.lock pins ({len(pins(LOCK.read_text()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
