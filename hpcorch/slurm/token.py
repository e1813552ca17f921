"""The slurmrestd JWT: from the environment or ``scontrol token``, renewed before it expires.

The token is a secret: it is never logged and never put in an error message
(:func:`scrub` removes it from any text that might carry it).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from hpcorch.errors import SlurmError
from hpcorch.sites.model import TokenSource
from hpcorch.slurm.cli import Runner, run_command
from hpcorch.slurm.parse import parse_scontrol_token

__all__ = ["TokenProvider", "jwt_expiry", "scrub"]

logger = logging.getLogger(__name__)

REDACTED = "<redacted>"


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (Unix seconds), or None when it has none or is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced by ``<redacted>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class TokenProvider:
    """Hands out a valid JWT, renewing it ``margin_s`` before it expires.

    Order: a token already held and still fresh; the environment variable
    (``SLURM_JWT``) if fresh; else the command (``scontrol token``).
    """

    def __init__(
        self,
        source: TokenSource | None = None,
        *,
        env: Mapping[str, str] | None = None,
        runner: Runner = run_command,
        clock: Callable[[], float] = time.time,
        margin_s: float = 120.0,
    ) -> None:
        self._source = source or TokenSource()
        self._env = os.environ if env is None else env
        self._run = runner
        self._clock = clock
        self._margin = margin_s
        self._token: str | None = None
        self._expires: float | None = None
        self._rejected: str | None = None
        self._lock = threading.Lock()
        self.renewals = 0

    def _fresh(self, expires: float | None) -> bool:
        return expires is None or expires - self._clock() > self._margin

    def current(self) -> str | None:
        """The token held now, for scrubbing error text (may be None)."""
        return self._token

    def token(self) -> str:
        with self._lock:
            if self._token is not None and self._fresh(self._expires):
                return self._token
            from_env = self._env.get(self._source.env)
            usable = from_env and from_env not in (self._token, self._rejected)
            if from_env and usable and self._fresh(jwt_expiry(from_env)):
                self._token, self._expires = from_env, jwt_expiry(from_env)
                return from_env
            return self._renew()

    def invalidate(self) -> None:
        """Forget the held token (slurmrestd said 401): the next call gets a new one."""
        with self._lock:
            self._rejected = self._token
            self._token, self._expires = None, None

    def _renew(self) -> str:
        argv = list(self._source.command)
        if not argv:
            raise SlurmError(
                f"no valid slurmrestd token: ${self._source.env} is unset or expired and "
                "the site gives no token command; run `scontrol token` and export it"
            )
        if not any(a.startswith("lifespan=") for a in argv):
            argv.append(f"lifespan={int(self._source.lifespan_s)}")
        env = {k: v for k, v in self._env.items() if k != self._source.env}
        done = self._run(argv, None, env, 30.0)
        if done.returncode != 0:
            raise SlurmError(
                f"{' '.join(argv[:2])} failed ({done.stderr.strip() or done.returncode}); "
                f"export a token in ${self._source.env} instead"
            )
        token = parse_scontrol_token(done.stdout)
        self._token = token
        self._expires = jwt_expiry(token) or self._clock() + self._source.lifespan_s
        self.renewals += 1
        logger.info("renewed the slurmrestd token (valid %.0fs)", self._expires - self._clock())
        return token
