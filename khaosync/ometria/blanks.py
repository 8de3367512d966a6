"""Fields khaosync stops sending: how they are cleared in Ometria, and how a stale one is seen.

Ometria merges a pushed record into the one it holds (Push API page: "only the supplied fields
will be merged into the existing record"), so a field that is simply left out, such as a
coupon removed in the ERP, a tracking number cleared or a property dropped, *stays* in
Ometria. The only clearing means Ometria documents is a blank: "When @merge isn't used while
passing data, then passing blank data in a field may or may not result in those field values
being removed in the platform" ("Merge" support page). khaosync therefore:

1. sends an explicit ``null`` for every field the last version Ometria accepted from us
   carried and the new version does not (``with_blanks``; objects such as ``properties`` and
   addresses key by key, arrays are replaced whole by Ometria so they need nothing), and never
   sends ``@merge`` (with it, unset fields are "copied from the existing record");
2. reads back and calls a field Ometria still holds after it accepted our blank a
   ``stale_field`` (``stale_paths``): it cannot be cleared through the API, so the exceptions
   register owns it. Whether Ometria clears on ``null`` is listed in docs/verify-on-site.md.
"""

from __future__ import annotations

from typing import Any

DIRECTIVES = frozenset({"@merge", "@force_optin", "@add_to_lists", "@remove_from_lists"})
# Never blanked, even when a version stops carrying them: the identity, and consent. An ERP
# feed sends ``marketing_optin`` only when the ERP holds a decision (reference, consent), so a
# missing decision must not erase the one Ometria holds (an unsubscribe made there, say); a
# null ``marketing_optin`` is also not one of its three values.
NEVER_BLANKED = frozenset({"@type", "@collection", "id", "marketing_optin", "timestamp_subscribed",
                           "timestamp_unsubscribed"})


def is_blank(value: Any) -> bool:
    """"Blank data in a field": null or an empty string (what Ometria may treat as no value)."""
    return value is None or value == ""


def with_blanks(accepted: dict, new: dict) -> dict:
    """``new`` plus a ``null`` for every field ``accepted`` (the ledger's version) holds, as a
    value or as an earlier blank, that ``new`` leaves out. Once blanked, a field stays blanked
    in every later version, so a stale value can always be recognised as ours."""
    return _blank_missing(accepted, new, top=True)


def _blank_missing(accepted: dict, new: dict, *, top: bool) -> dict:
    out = dict(new)
    for key, before in accepted.items():
        if top and (key in DIRECTIVES or key in NEVER_BLANKED):
            continue
        if key not in new:
            out[key] = None
        elif isinstance(before, dict) and isinstance(new[key], dict):
            out[key] = _blank_missing(before, new[key], top=False)
    return out


def blanked(accepted: dict, new: dict) -> list[str]:
    """Paths (``coupon_code``, ``properties.keycode``) that ``with_blanks`` adds a new blank for:
    the fields khaosync stops sending in this version."""
    out: list[str] = []
    _collect_blanked(accepted, new, "", out)
    return out


def _collect_blanked(accepted: dict, new: dict, path: str, out: list[str]) -> None:
    for key, before in accepted.items():
        if not path and (key in DIRECTIVES or key in NEVER_BLANKED):
            continue
        where = f"{path}.{key}" if path else key
        if key not in new:
            if not is_blank(before):
                out.append(where)
        elif isinstance(before, dict) and isinstance(new[key], dict):
            _collect_blanked(before, new[key], where, out)


def stale_paths(sent: dict, held: Any, path: str = "") -> list[str]:
    """Paths where ``sent`` (what Ometria accepted from us) carries a blank and Ometria still
    holds a value: fields we cleared that Ometria kept."""
    out: list[str] = []
    if not isinstance(held, dict):
        return out
    for key, value in sent.items():
        where = f"{path}.{key}" if path else key
        if is_blank(value):
            if key in held and not is_blank(held[key]):
                out.append(where)
        elif isinstance(value, dict):
            out.extend(stale_paths(value, held.get(key), where))
    return out
