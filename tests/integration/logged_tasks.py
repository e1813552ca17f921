"""Function tasks for the per-attempt log tests: they print, log and raise."""

from __future__ import annotations

import logging
import sys
import time


def noisy(tag: str) -> None:
    """Prints to both streams, logs at INFO and WARNING, then raises."""
    print(f"print {tag}")
    print(f"stderr {tag}", file=sys.stderr)
    logging.getLogger("noisy").info("info %s", tag)
    logging.getLogger("noisy").warning("warn %s", tag)
    time.sleep(0.5)  # its sibling prints meanwhile
    raise RuntimeError(f"boom {tag}")


def chatty(tag: str) -> str:
    """Prints while :func:`noisy` runs in the same worker; succeeds."""
    for k in range(20):
        print(f"{tag} line {k}")
        logging.getLogger("chatty").warning("%s record %d", tag, k)
        time.sleep(0.05)
    return tag
