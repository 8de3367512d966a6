"""What a mapping rule returns: an Ometria record (or none), why it is held, and its findings.

The rules (``contacts``, ``orders``, ``products``) are plain functions from ERP models and a
``Mapping`` to an ``Outcome``; they never touch the store. The ``map`` stage turns outcomes
into ``outbound_record`` rows and findings into exception rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khaosync.ometria.models import OmetriaRecord

Lineage = tuple[str, str, int]
"""(staged entity, stable key, version): one ERP record version that went into a record."""


@dataclass(frozen=True, slots=True)
class Finding:
    """An exception to record at stage ``map``: typed, naming every record involved."""

    type: str
    reason: str
    records: tuple[str, ...]  # "sales_order:2042", "contact:7086", ...
    entity: str               # the staged entity (or "contact") the finding is about
    key: str | None
    detail: dict | None = None


@dataclass(slots=True)
class Outcome:
    """One Ometria record the rules made (``record``), or could not make (``record is None``).

    ``hold`` says why it must not be sent; a held record with a body is still written (state
    ``held``) so diff and operators can see what it would have been.
    """

    type: str  # Ometria @type: contact | order | product
    id: str
    record: OmetriaRecord | None
    lineage: list[Lineage]
    hold: str | None = None
    findings: list[Finding] = field(default_factory=list)

    def held_because(self, reason: str) -> None:
        self.hold = reason if not self.hold else f"{self.hold}; {reason}"


def lineage_json(lineage: list[Lineage]) -> list[dict]:
    return [{"entity": e, "key": k, "version": v} for e, k, v in lineage]
