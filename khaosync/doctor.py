"""``khaosync doctor``: is this installation ready? One check per thing that must work, each
with what to do when it does not (issue 14.9).

The checks: the configuration loads; the Ometria API key is set; Ometria answers with it (one
read request: the account's collections) and holds the configured collection; the Khaos
Control WSDL can be fetched and offers what khaosync calls; the state store opens at a schema
this khaosync knows. A check that cannot run because an earlier one failed says so.
Read-only: nothing is written, not even the state store's lock file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from khaosync.config import Profile, load_profile
from khaosync.errors import KhaosyncError


@dataclass(frozen=True)
class Check:
    name: str
    status: str    # ok | warn | fail | skipped
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def run_checks(config_path: str | None, state: str | None) -> tuple[Profile | None, list[Check]]:
    try:
        profile = load_profile(config_path, state=state)
    except KhaosyncError as exc:
        first = str(exc).splitlines()
        return None, [Check("config", "fail", " ".join(line.strip() for line in first),
                            "correct the file (khaosync init writes a commented one; README.md lists the keys)")]
    where = profile.source or "no config file: the built-in sandbox"
    checks = [Check("config", "ok", f"{profile.mode} profile {profile.name!r} from {where}")]
    checks += _ometria(profile)
    checks.append(_khaos(profile))
    checks.append(_state(profile))
    return profile, checks


def _ometria(profile: Profile) -> list[Check]:
    try:
        profile.ometria.resolved_api_key()
    except KhaosyncError as exc:
        return [Check("ometria key", "fail", str(exc),
                      f"export {profile.ometria.api_key_env}=<the key from Ometria's account settings>"),
                Check("ometria", "skipped", "needs the API key")]
    checks = [Check("ometria key", "ok", "set" + (f" (from {profile.ometria.api_key_env})"
                                                  if profile.ometria.api_key is None else " (in the config file)"))]
    from khaosync.connect import Connections

    try:
        client = Connections(profile).ometria_client()
        try:
            collections = client.collections()
        finally:
            client.close()
    except KhaosyncError as exc:
        fix = ("check the key (a 401/403 means Ometria refused it) and ometria.base_url; "
               "khaosync -v doctor shows more")
        return checks + [Check("ometria", "fail", str(exc).splitlines()[0], fix)]
    ids = sorted(str(c.get("id")) for c in collections if isinstance(c, dict))
    if ids and profile.ometria.collection not in ids:
        return checks + [Check("ometria", "fail", f"answers at {profile.ometria.base_url}, but holds no collection "
                               f"{profile.ometria.collection!r} (it has: {', '.join(ids)})",
                               "set ometria.collection to one of those")]
    return checks + [Check("ometria", "ok", f"answers at {profile.ometria.base_url}; collection "
                           f"{profile.ometria.collection!r} found")]


def _khaos(profile: Profile) -> Check:
    from khaosync.connect import Connections
    from khaosync.khaos.discover import discover

    url = profile.khaos.resolved_wsdl_url()
    try:
        document = Connections(profile).khaos_client().fetch_wsdl()
        report = discover(document, profile.khaos)
    except KhaosyncError as exc:
        return Check("khaos control", "fail", f"WSDL {url}: {str(exc).splitlines()[0]}",
                     "check khaos.soap_url / khaos.wsdl_url and that this machine reaches the KC web service")
    wrong = [op.our_name or op.name for op in report.operations
             if op.status in ("expected_missing", "different_signature")]
    if wrong:
        return Check("khaos control", "fail", f"WSDL {url}: {len(wrong)} operation(s) missing or different: "
                     f"{', '.join(wrong)}", "khaosync khaos discover shows each; map renamed ones in khaos.methods")
    return Check("khaos control", "ok", f"WSDL {url}: every operation khaosync calls is offered")


def _state(profile: Profile) -> Check:
    from khaosync.store.schema import SCHEMA_VERSION

    path = Path(profile.state)
    if not path.exists():
        return Check("state store", "warn", f"{path} does not exist yet", "the first `khaosync pull` creates it")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("state store", "fail", f"{path}: {exc}", "point --state (or state:) at a khaosync state store")
    if version > SCHEMA_VERSION:
        return Check("state store", "fail", f"{path}: schema {version}, newer than this khaosync ({SCHEMA_VERSION})",
                     "upgrade khaosync")
    behind = f"; the next writing run migrates it to {SCHEMA_VERSION}" if version < SCHEMA_VERSION else ""
    return Check("state store", "ok", f"{path}: schema {version}{behind}")
