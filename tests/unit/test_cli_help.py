"""Every command's --help has an example; exit codes are documented; shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in sorted(group.commands.items()):
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*prefix, name)))
    return out


COMMANDS = _commands(cli)


def test_the_issue_commands_exist() -> None:
    names = {c[0] for c in COMMANDS}
    wanted = "run submit status resume cancel logs report sites doctor completion simulate"
    assert set(wanted.split()) <= names


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_has_an_example(argv: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert "hpcorch " + argv[0] in result.output.split("Example", 1)[1]


def test_top_level_help_documents_exit_codes() -> None:
    text = CliRunner().invoke(cli, ["--help"]).output
    for code, meaning in (("0", "success"), ("1", "tasks failed"), ("2", "bad input")):
        assert f"{code}  {meaning}" in text
    assert "3  infrastructure unavailable" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0
    assert "_HPCORCH_COMPLETE" in result.output
    assert f"{shell}_complete" in result.output


def test_completion_unknown_shell() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "'tcsh' is not one of" in result.output


def test_installed_script_answers_completion_requests() -> None:
    exe = Path(sys.executable).parent / "hpcorch"
    env = {**os.environ, "_HPCORCH_COMPLETE": "bash_complete", "COMP_WORDS": "hpcorch st"}
    env["COMP_CWORD"] = "1"
    out = subprocess.run([str(exe)], env=env, capture_output=True, text=True, check=True).stdout
    assert "plain,status" in out.splitlines()
