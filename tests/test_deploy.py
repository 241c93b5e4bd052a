"""What a Procfile host (Heroku and the like) runs, as the README's deployment walkthrough
says: the Procfile's processes are firmgrant commands that exist, a build installs the
PostgreSQL driver, and the Python it picks is one firmgrant supports."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

from firmgrant.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return {
        kind.strip(): shlex.split(command)
        for kind, _, command in (line.partition(":") for line in lines if line.strip())
    }


def test_the_procfile_runs_the_dashboard_the_worker_and_migrations_on_release(
    capsys: pytest.CaptureFixture[str],
) -> None:
    processes = _procfile()
    assert processes == {
        "web": ["firmgrant", "web"],
        "worker": ["firmgrant", "run"],
        "release": ["firmgrant", "db", "upgrade"],
    }
    for argv in processes.values():
        with pytest.raises(SystemExit) as helped:
            main([*argv[1:], "--help"])
        assert helped.value.code == 0, argv
        assert "usage: firmgrant" in capsys.readouterr().out


def test_a_build_installs_firmgrant_with_the_postgresql_driver() -> None:
    wanted = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert wanted == [".[postgres]"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(dep.startswith("psycopg") for dep in project["optional-dependencies"]["postgres"])


def test_the_platform_picks_a_python_firmgrant_supports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lowest = tuple(int(p) for p in project["requires-python"].removeprefix(">=").split("."))
    chosen = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert tuple(int(p) for p in chosen.split(".")[:2]) >= lowest
