"""``python -m hpcorch``: the CLI, for job scripts that must not depend on PATH."""

from hpcorch.cli.main import main

main()
