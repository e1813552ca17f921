"""docs/quickstart.md stays true: its commands exist, its files exist, its Python runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.sites.model import AllocationUse

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "docs" / "quickstart.md").read_text()


def test_every_hpcorch_command_it_names_exists() -> None:
    code = re.findall(r"```\w*\n(.*?)```", TEXT, re.S) + re.findall(r"`([^`\n]+)`", TEXT)
    lines = [line.split("#")[0] for block in code for line in block.splitlines()]
    named = {m for line in lines for m in re.findall(r"\bhpcorch ([a-z][a-z-]+)", line)}
    assert {"run", "submit", "status", "completion"} <= named
    assert named <= set(cli.commands), named - set(cli.commands)


def test_every_file_it_names_exists() -> None:
    for path in re.findall(r"(workflows/[\w./-]+\.(?:yaml|json|py|md))", TEXT):
        assert (REPO / path).is_file(), path


def test_exit_codes_agree_with_the_help() -> None:
    help_text = CliRunner().invoke(cli, ["--help"]).output
    for code, meaning in (
        ("0", "success"),
        ("1", "tasks failed"),
        ("2", "bad input"),
        ("3", "infrastructure unavailable"),
    ):
        assert f"| {code} | {meaning}" in TEXT
        assert f"{code}  {meaning}" in help_text


def test_the_python_example_runs(tmp_path: Path) -> None:
    block = re.search(r"```python\n(.*?)```", TEXT, re.S)
    assert block
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(block.group(1)))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "5.0"


def test_the_site_allocation_section_matches_the_model() -> None:

    defaults = AllocationUse()
    assert f"use_current: {str(defaults.use_current).lower()}" in TEXT
    assert f"add_allocations: {str(defaults.add_allocations).lower()}" in TEXT
