"""The lock file pins every dependency, agrees with constraints.txt, and is what CI and the README install through."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    found = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;@]+)", line)
        assert match, f"{path.name}: {line!r} is not a plain name==version pin"
        found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def requirement_name(spec: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", spec).group(0)).lower()


def test_lock_pins_every_dependency_and_agrees_with_constraints():
    lock = pins(ROOT / "requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    wanted += [line for line in (ROOT / "requirements-offline.txt").read_text().splitlines() if line and not line.startswith("#")]
    missing = sorted({requirement_name(d) for d in wanted} - set(lock) - {"bivrec"})
    assert not missing, f"requirements.lock lacks {missing}: regenerate it (README)"
    for name, version in pins(ROOT / "constraints.txt").items():
        assert lock[name] == version, f"requirements.lock pins {name}=={lock[name]}, constraints.txt {version}"
    assert "file://" not in (ROOT / "requirements.lock").read_text()


def test_ci_and_readme_install_through_the_lock():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    for command in ("pip install -q -c constraints.txt -c requirements.lock -e '.[test]'",
                    "pip install -q -c requirements.lock --no-deps -r requirements-offline.txt"):
        assert command in ci
        assert command.replace(" -q", "") in readme
