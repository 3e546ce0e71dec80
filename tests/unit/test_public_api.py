"""The public API (`import chatserver`) is what public_api.json recorded for the version in
pyproject.toml: a name or signature that changes fails here until the version changes too.

After changing the public API on purpose: raise the version in pyproject.toml (semantic
versioning: see required_bump), say what changed in CHANGELOG.md, and record the new surface:

    .venv/bin/python tests/unit/test_public_api.py --update

The update refuses a version that does not rise enough for what changed.
"""

import enum
import importlib.resources
import inspect
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

import chatserver

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("public_api.json")
UPDATE = "python tests/unit/test_public_api.py --update"

# A type's module is not part of the API: chatserver.domain.users.User is User.
_OUR_MODULES = re.compile(
    r"\bchatserver\.(?:domain|application|adapters|entrypoints)(?:\.\w+)*\.([A-Za-z_]\w*)"
)


def _plain(text: str) -> str:
    return _OUR_MODULES.sub(r"\1", text)


def _signature(obj: Any) -> str | None:
    try:
        return _plain(str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return None


def _member(value: Any) -> str:
    if isinstance(value, property):
        return "property"
    if isinstance(value, staticmethod | classmethod):
        return f"{type(value).__name__} {_signature(value.__func__)}"
    if inspect.isfunction(value):
        return f"def {_signature(value)}"
    if isinstance(value, str | int | float | bool | tuple | type(None)):
        return f"= {value!r}"
    if type(value).__name__ == "member_descriptor":  # a slot: an attrs field
        return "attribute"
    return f": {_plain(type(value).__name__)}"


def describe(obj: Any) -> Any:
    """What an embedder relies on of one public name, as JSON."""
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return {"enum": {member.name: repr(member.value) for member in obj}}
    if isinstance(obj, type):
        members: dict[str, str] = {}
        for cls in obj.__mro__:
            if not cls.__module__.startswith("chatserver"):
                continue
            for name, value in vars(cls).items():
                if not name.startswith("_") and name not in members:
                    members[name] = _member(value)
        bases = [_plain(f"{base.__module__}.{base.__qualname__}") for base in obj.__bases__]
        return {"class": _signature(obj), "bases": bases, "members": dict(sorted(members.items()))}
    if callable(obj) and not hasattr(obj, "__args__"):
        return {"def": _signature(obj)}
    return {"alias": _plain(str(obj)).replace("typing.", "")}


def current_api() -> dict[str, Any]:
    return {
        name: describe(getattr(chatserver, name))
        for name in sorted(chatserver.__all__) if name != "__version__"
    }


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Names removed, changed and added."""
    removed = sorted(set(old) - set(new))
    changed = sorted(name for name in set(old) & set(new) if old[name] != new[name])
    added = sorted(set(new) - set(old))
    return removed, changed, added


def required_bump(old_version: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """"major", "minor" or None: how much the version must rise from old_version.

    Semantic versioning: a removed or changed name breaks callers (major; minor before 1.0,
    where the minor number is the one that breaks); an added name is a feature (minor). An
    unreleased version (0.2.0.dev0) promised nothing yet: any later version may change it.
    """
    removed, changed, added = changes(old, new)
    if not (removed or changed or added):
        return None
    if Version(old_version).is_prerelease:
        return "any"
    if removed or changed:
        return "major" if Version(old_version).major >= 1 else "minor"
    return "minor"


def rises_enough(old_version: str, new_version: str, bump: str | None) -> bool:
    old, new = Version(old_version), Version(new_version)
    if bump is None:
        return True
    if new <= old:
        return False
    if bump == "major":
        return new.major > old.major
    if bump == "minor":
        return new.release[:2] > old.release[:2]
    return True


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    removed, changed, added = changes(old, new)
    lines = [f"- removed: {name}" for name in removed]
    for name in changed:
        lines.append(f"- changed: {name}\n    was: {old[name]}\n    now: {new[name]}")
    lines += [f"- added: {name}" for name in added]
    return "\n".join(lines)


def load_snapshot() -> dict[str, Any]:
    return dict(json.loads(SNAPSHOT.read_text(encoding="utf-8")))


def test_the_public_api_is_the_one_recorded_for_this_version() -> None:
    snapshot, api, version = load_snapshot(), current_api(), project_version()
    if snapshot["version"] == version:
        assert api == snapshot["api"], (
            f"the public API changed but the version did not (still {version}):\n"
            f"{_diff(snapshot['api'], api)}\nraise the version in pyproject.toml, say so in "
            f"CHANGELOG.md, then run {UPDATE}"
        )
    else:
        pytest.fail(f"pyproject.toml says {version}, public_api.json was recorded for "
                    f"{snapshot['version']}: run {UPDATE}")


def test_every_public_name_is_importable_and_listed_once() -> None:
    assert len(set(chatserver.__all__)) == len(chatserver.__all__)
    for name in chatserver.__all__:
        assert hasattr(chatserver, name), name


def test_the_deep_import_paths_give_the_same_objects() -> None:
    from chatserver.application.commands import Login
    from chatserver.entrypoints.bootstrap import ChatApp, Config, bootstrap, open_node

    assert chatserver.Config is Config and chatserver.ChatApp is ChatApp
    assert chatserver.Login is Login
    assert bootstrap is open_node is chatserver.open_node


def test_the_package_says_it_is_typed() -> None:
    assert (importlib.resources.files("chatserver") / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in data["package-data"]["chatserver"]


def test_the_changelog_has_a_section_for_the_version() -> None:
    version = Version(project_version())
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    heading = "## [Unreleased]" if version.is_prerelease else f"## [{version}]"
    assert heading in text, f"CHANGELOG.md has no {heading!r} section for {version}"


def test_the_api_reference_page_shows_every_public_name() -> None:
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"^::: chatserver\.(\w+)$", page, re.MULTILINE))
    public = set(chatserver.__all__) - {"__version__"}
    assert shown == public, f"missing {sorted(public - shown)}, not public {sorted(shown - public)}"


API = {"open_node": {"def": "(config)"}, "Config": {"class": "()"}}


@pytest.mark.parametrize(
    ("old_version", "new", "new_version", "allowed"),
    [
        ("1.2.0", API, "1.2.0", True),  # nothing changed
        ("1.2.0", API, "1.2.1", True),
        ("1.2.0", {**API, "Hook": {"class": "()"}}, "1.2.1", False),  # added: minor
        ("1.2.0", {**API, "Hook": {"class": "()"}}, "1.3.0", True),
        ("1.2.0", {"Config": API["Config"]}, "1.3.0", False),  # removed: major
        ("1.2.0", {"Config": API["Config"]}, "2.0.0", True),
        ("1.2.0", {**API, "open_node": {"def": "(config, hub)"}}, "1.9.0", False),  # changed
        ("0.3.0", {"Config": API["Config"]}, "0.3.1", False),  # before 1.0 minor breaks
        ("0.3.0", {"Config": API["Config"]}, "0.4.0", True),
        ("0.2.0.dev0", {"Config": API["Config"]}, "0.2.0.dev1", True),  # unreleased
        ("0.2.0.dev0", {"Config": API["Config"]}, "0.2.0.dev0", False),
    ],
)
def test_a_changed_api_needs_a_large_enough_version_rise(
    old_version: str, new: dict[str, Any], new_version: str, allowed: bool
) -> None:
    bump = required_bump(old_version, API, new)
    changed = bump is not None
    assert (rises_enough(old_version, new_version, bump)
            and (not changed or new_version != old_version)) is allowed


def update() -> int:
    api, version = current_api(), project_version()
    if SNAPSHOT.exists():
        old = load_snapshot()
        bump = required_bump(old["version"], old["api"], api)
        if bump is not None and (version == old["version"]
                                 or not rises_enough(old["version"], version, bump)):
            print(f"the public API changed ({bump} change) but {old['version']} -> {version} "
                  f"is not enough:\n{_diff(old['api'], api)}", file=sys.stderr)
            return 1
    SNAPSHOT.write_text(json.dumps({"version": version, "api": api}, indent=1) + "\n",
                        encoding="utf-8")
    print(f"{SNAPSHOT.name}: {len(api)} names for version {version}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {sys.argv[0]} --update")
    sys.exit(update())
