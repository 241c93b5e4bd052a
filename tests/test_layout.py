"""docs/layout.md (the README links it) matches the tree a newcomer opens."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "firmgrant"


def _layout() -> str:
    return (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")


def test_every_verb_maps_to_a_module_that_exists() -> None:
    rows = re.findall(r"^\| (\w+) \| (.+?) \|", _layout(), re.MULTILINE)
    verbs = {verb: modules for verb, modules in rows if verb != "verb"}
    assert set(verbs) == {
        "poll", "mirror", "enforce", "remind", "notices", "revoke", "dispatch", "export",
    }  # fmt: skip
    for verb, modules in verbs.items():
        for module in re.findall(r"`([^`]+)`", modules):
            assert (PACKAGE / module).exists(), f"{verb}: {module} is not in src/firmgrant"


def test_every_module_of_the_package_is_in_the_layout() -> None:
    """A module added without a word in the Layout section is found here."""
    layout = _layout()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" or "migrations" in relative.parts:
            continue
        name = relative.stem
        assert re.search(rf"\b{re.escape(name)}\b", layout), f"{relative} is not in docs/layout.md"
