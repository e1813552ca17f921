"""The environment a child process gets: the caller's, minus every secret.

Tasks, worker processes, Slurm jobs (workers and the driver job) and the
Slurm commands hpcorch runs all get their environment from :func:`child_env`,
so a secret in the user's environment (slurmrestd's ``SLURM_JWT``, a site's
own token variable, a ``*_TOKEN``/``*_SECRET``/``*PASSWORD*``) never reaches a
task, a job script, a log or the journal, whatever its name. Names are judged
by :func:`is_secret`; a site adds its token variable with :func:`site_secrets`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcorch.sites.model import Site

__all__ = ["SECRET_ENV", "child_env", "is_secret", "secret_names", "site_secrets"]

SECRET_ENV = ("SLURM_JWT",)
"""Secrets by name, whatever the patterns say."""

# A secret word as a whole part of the name: GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY,
# DB_PASSWORD, MY_API_KEY; not TOKENIZERS_PARALLELISM (a word inside another).
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:TOKENS?|SECRETS?|JWT|API_?KEYS?|CREDENTIALS?|PASSPHRASE)(?:$|_)|PASSW",
    re.IGNORECASE,
)


def is_secret(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether the variable ``name`` holds a secret (by pattern, or listed in ``extra``)."""
    return name in SECRET_ENV or name in set(extra) or _SECRET_NAME.search(name) is not None


def secret_names(env: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    """The names in ``env`` that are secret, sorted (for ``env -u`` and ``unset``)."""
    extra = set(extra)
    return sorted(name for name in env if is_secret(name, extra))


def child_env(env: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """``env`` without its secrets (``extra``: more secret names, e.g. :func:`site_secrets`)."""
    extra = set(extra)
    return {k: v for k, v in env.items() if not is_secret(k, extra)}


def site_secrets(*sites: Site) -> tuple[str, ...]:
    """The variables that carry the slurmrestd token of ``sites`` (``SLURM_JWT`` included)."""
    names = set(SECRET_ENV)
    for site in sites:
        rest = site.slurm.rest if site.slurm is not None else None
        if rest is not None:
            names.add(rest.token.env)
    return tuple(sorted(names))
