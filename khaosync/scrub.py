"""Keeping secrets out of messages: what an external system echoes back is scrubbed before
it is cut, printed, logged or stored (``push_batch.error``).

A message cut in the middle of a secret would otherwise show all but its last characters, so
any run of ``FRAGMENT`` or more characters of a secret counts as the secret; a secret shorter
than that is only replaced whole.
"""

from __future__ import annotations

from typing import Iterable

FRAGMENT = 8
MASK = "***"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret, and every ``FRAGMENT``-character piece of one, as ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
        if len(secret) > FRAGMENT:
            text = _scrub_fragments(text, secret)
    return text


def _scrub_fragments(text: str, secret: str) -> str:
    grams = {secret[i:i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i:i + FRAGMENT] in grams:
            end = i + FRAGMENT
            # Grow the match while it is still a piece of the secret: one mask per fragment.
            while end < len(text) and text[i:end + 1] in secret:
                end += 1
            out.append(MASK)
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
