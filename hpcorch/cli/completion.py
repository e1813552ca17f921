"""``hpcorch completion bash|zsh|fish``: print click's shell completion script."""

from __future__ import annotations

import click

__all__ = ["completion"]

_SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(_SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL; source it from your shell's startup file.

    \b
    Examples:
      hpcorch completion bash > ~/.local/share/bash-completion/completions/hpcorch
      echo 'eval "$(hpcorch completion zsh)"' >> ~/.zshrc
      hpcorch completion fish > ~/.config/fish/completions/hpcorch.fish
    """
    from click.shell_completion import get_completion_class  # noqa: PLC0415  # CLI fast path: --help does not load it

    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    # The same variable the installed `hpcorch` script answers to (_HPCORCH_COMPLETE).
    root = ctx.find_root()
    script = cls(root.command, {}, "hpcorch", "_HPCORCH_COMPLETE").source()
    click.echo(script)
