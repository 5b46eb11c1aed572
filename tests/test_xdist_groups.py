"""The suite's modules that share a server stack rely on `xdist_group`: this checks that the
installed pytest and pytest-xdist honour it (pytest 9.2 with pytest-xdist 3.8 does not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = """
import os
from pathlib import Path

import pytest


@pytest.mark.xdist_group("stack")
@pytest.mark.parametrize("n", range(6))
def test_grouped(n: int) -> None:
    with (Path(__file__).parent / "workers.txt").open("a") as out:
        out.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("n", range(6))
def test_free(n: int) -> None:
    pass
"""


def test_tests_of_one_xdist_group_run_in_one_process(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n3", "--dist=loadgroup", "-pno:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 6
    assert len(set(workers)) == 1, workers
