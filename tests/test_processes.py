"""The process helpers the signal, server and worker tests rely on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import child_running, wait_for


def _found(parent: int, needle: str) -> bool:
    try:
        child_running(parent, needle)
    except AssertionError:
        return False
    return True


def test_a_child_is_found_by_its_whole_command_line_in_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ps` cuts each line to COLUMNS: with 80 and a long interpreter path, the module name
    at the end of a command line was never seen."""
    monkeypatch.setenv("COLUMNS", "80")
    needle = "x" * 100 + "-the-needle"
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
         "'import time; time.sleep(30)', sys.argv[1]])", needle]
    )  # fmt: skip
    try:
        wait_for(lambda: _found(parent.pid, needle), 20, "the child", poll=0.05)
    finally:
        subprocess.run(["pkill", "-f", needle], check=False)
        parent.wait(10)
