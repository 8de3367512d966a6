"""Consistent PII masking for reports that leave the building (``report --mask-pii``).

Every person gets one number, in the order the report first mentions them: their email
becomes ``person-0001@masked.invalid`` and their name ``Person 0001``, wherever either
appears. The same person keeps the same mask across the whole report, so a reader can still
see that two findings are about one customer without learning who. No key, no hash: the
mask is only a first-seen counter, so it cannot be reversed and cannot be matched across
two reports either (on purpose: a shared report must not become an identifier).

People are linked by what the ERP knows: ``Masker(people=[(email, name), ...])`` says this
email and this name are one person, so masking either gives that person's number. Free text
(an exception's reason) is scrubbed of every known email and full name, even a malformed
email (``jane.doe@``), and of anything else that looks like an email.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
MASK_DOMAIN = "masked.invalid"  # .invalid never resolves: a masked address can never be mailed


def _email_key(email: str) -> str:
    return email.strip().lower()


def _name_key(name: str) -> str:
    return " ".join(name.split()).lower()


class Masker:
    """Replaces emails and names with ``person-NNNN`` masks, consistently."""

    def __init__(self, people: Iterable[tuple[str | None, str | None]] = ()):
        self._person_of: dict[str, str] = {}  # "email:..." / "name:..." -> the person's first identity
        self._numbers: dict[str, int] = {}     # person -> mask number, in first-seen order
        self._emails: set[str] = set()         # known emails, searched for in free text
        self._names: set[str] = set()          # known full names (two words or more)
        self._pattern: re.Pattern[str] | None = None
        for email, name in people:
            self.link(email, name)

    def link(self, email: str | None, name: str | None) -> None:
        """Say that ``email`` and ``name`` belong to one person (either may be missing)."""
        keys = []
        if email and email.strip():
            keys.append("email:" + _email_key(email))
            self._emails.add(_email_key(email))
        if name and _name_key(name):
            keys.append("name:" + _name_key(name))
            # Only full names are searched for in free text: a lone first name or surname also
            # spells ordinary words ("Rose", "Green") and would mangle the report.
            if len(_name_key(name).split()) >= 2:
                self._names.add(_name_key(name))
        if not keys:
            return
        self._pattern = None
        person = next((self._person_of[k] for k in keys if k in self._person_of), keys[0])
        for key in keys:
            self._person_of.setdefault(key, person)

    def _number(self, key: str) -> int:
        person = self._person_of.setdefault(key, key)
        if person not in self._numbers:
            self._numbers[person] = len(self._numbers) + 1
        return self._numbers[person]

    def email(self, email: str | None) -> str | None:
        if not email or not email.strip():
            return email
        return f"person-{self._number('email:' + _email_key(email)):04d}@{MASK_DOMAIN}"

    def name(self, name: str | None) -> str | None:
        if not name or not _name_key(name):
            return name
        return f"Person {self._number('name:' + _name_key(name)):04d}"

    def _known(self) -> re.Pattern[str] | None:
        if self._pattern is None and (self._emails or self._names):
            # Longest first, so "ann.lee@x.com" is not cut short by "lee@x.com".
            emails = sorted(self._emails, key=len, reverse=True)
            names = sorted(self._names, key=len, reverse=True)
            alternatives = [re.escape(e) for e in emails]
            alternatives += [r"\b" + r"\s+".join(re.escape(w) for w in n.split()) + r"\b" for n in names]
            self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        return self._pattern

    def _replace_known(self, match: re.Match[str]) -> str:
        found = match.group(0)
        if _email_key(found) in self._emails:  # a malformed one too ("jane.doe.example.com")
            return self.email(found) or ""
        return self.name(found) or ""

    def text(self, text: str | None) -> str | None:
        """Free text with every known email and full name, and anything like an email, masked."""
        if not text:
            return text
        pattern = self._known()
        out = pattern.sub(self._replace_known, text) if pattern is not None else text
        return EMAIL.sub(lambda m: m.group(0) if m.group(0).endswith("@" + MASK_DOMAIN) else self.email(m.group(0))
                         or "", out)

    def value(self, value: Any) -> Any:
        """Any JSON-like value with its strings scrubbed (``text``), dicts and lists walked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


class NoMask(Masker):
    """The identity: reports for people allowed to see who is who."""

    def email(self, email: str | None) -> str | None:
        return email

    def name(self, name: str | None) -> str | None:
        return name

    def text(self, text: str | None) -> str | None:
        return text
