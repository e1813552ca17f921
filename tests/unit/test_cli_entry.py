"""The console script works after installation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_entry_point(flag: str) -> None:
    exe = Path(sys.executable).parent / "hpcorch"
    proc = subprocess.run([str(exe), flag], capture_output=True, text=True, check=True)
    assert "hpcorch" in proc.stdout
