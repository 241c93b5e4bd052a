"""The package as `pip install` builds it: clean metadata, every file it needs at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_wheel_builds_without_warnings_and_carries_its_data(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # A newcomer's first screen (`make demo`) shows what the build backend warns about.
    assert "Warning" not in output, output
    assert "deprecated" not in output.lower(), output
    [wheel] = tmp_path.glob("firmgrant-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "firmgrant/templates/emails/reminder.html.j2",
        "firmgrant/ledger/migrations/env.py",
        "firmgrant/ledger/migrations/versions/0004_revocation_attempt.py",
        "firmgrant/py.typed",
        "firmgrant/web/templates/grants.html",
        "firmgrant/web/static/htmx.min.js",
        "firmgrant/web/static/htmx.LICENSE",
        "firmgrant/web/static/style.css",
    ):
        assert needed in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    assert "License-Expression: LicenseRef-Proprietary" in (
        zipfile.ZipFile(wheel).read(metadata).decode()
    )
