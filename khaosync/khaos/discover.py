"""``discover``: read a site's WSDL and say, operation by operation, whether khaosync can talk to it.

Each operation in the WSDL, and each one khaosync calls, gets one mark:

- ``used``: khaosync calls it, the site takes every parameter we send, with no extra
  required ones, and returns what we read (a string, or a structure with our fields);
- ``expected_missing``: khaosync calls it (after ``khaos.methods`` renames) and the site
  does not publish it;
- ``different_signature``: published, but it lacks a parameter we send, wants a required
  one we do not send, or returns another shape (a string where we read a structure, or a
  structure without a field we read);
- ``unused``: published, and khaosync does not call it (with these settings).

``report.advice`` then says, one line per difference, what differs on this site and which
setting covers it (``khaos.methods``, ``khaos.stock_list_form``, ``khaos.compressed_stock``,
``khaos.credentials``...), or that none does.

What khaosync sends and reads comes from ``EXPECTED_OPERATIONS`` (the table the client builds
its requests from), plus ``Username``/``Password`` when the profile has body credentials.
The WSDL may be rpc (Delphi's default, KC's; extra parts are reported but do not change the
mark: a Delphi server defaults missing parts) or document/literal wrapped (``minOccurs="0"``
means optional); see khaos/wsdl.py.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, Field

from khaosync.config import KhaosSettings
from khaosync.khaos.soap import CREDENTIAL_PARAMS, EXPECTED_OPERATIONS, Operation, Param, site_method_name
from khaosync.khaos.wsdl import Shape, SiteOperation, Wsdl, parse_wsdl

Mark = Literal["used", "expected_missing", "different_signature", "unused"]


class WsdlParam(BaseModel):
    name: str
    xsd_type: str | None = None
    required: bool | None = Field(default=None, description="None: the WSDL cannot say (rpc style)")


class OperationReport(BaseModel):
    name: str = Field(description="as the site spells it; our name when the site lacks it")
    our_name: str | None = Field(default=None, description="our method name, when khaosync calls this")
    status: Mark
    soap_action: str | None = None
    params: list[WsdlParam] = Field(default_factory=list, description="what the site's WSDL declares")
    sent_params: list[str] = Field(default_factory=list, description="what khaosync sends")
    missing_params: list[str] = Field(default_factory=list, description="we send them, the site lacks them")
    extra_required_params: list[str] = Field(default_factory=list, description="the site requires them, we do not send them")
    extra_params: list[str] = Field(default_factory=list, description="every site parameter we do not send")
    type_differences: list[str] = Field(default_factory=list)
    returns: str | list[str] | None = Field(default=None, description="the site's return: a type name or a structure's fields")
    reads: str | list[str] | None = Field(default=None, description="what khaosync reads from the return")
    return_difference: str | None = None
    suggestions: list[str] = Field(default_factory=list, description="similar site operations, for khaos.methods")
    notes: list[str] = Field(default_factory=list)


class DiscoverReport(BaseModel):
    service: str | None = None
    target_namespace: str | None = None
    endpoint: str | None = None
    style: str | None = None
    body_namespace: str | None = Field(default=None, description="the method elements' namespace, as khaosync will send it")
    operations: list[OperationReport]
    advice: list[str] = Field(default_factory=list, description="one line per difference, with the setting that covers it")
    notes: list[str] = Field(default_factory=list)

    def with_status(self, status: Mark) -> list[OperationReport]:
        return [op for op in self.operations if op.status == status]

    def operation(self, name: str) -> OperationReport:
        """By the site's name or ours."""
        for op in self.operations:
            if name in (op.name, op.our_name):
                return op
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        """True when every operation khaosync calls is there with a matching signature."""
        return all(op.status in ("used", "unused") for op in self.operations)


# -- comparing -------------------------------------------------------------------------

def sent_params(operation: Operation, settings: KhaosSettings, form: str | None = None) -> tuple[Param, ...]:
    """What the client puts in the method element for this operation, in order."""
    body_credentials = settings.credentials is not None and settings.credentials.mode == "body"
    params = operation.forms[form] if form else operation.params_for(settings)
    return (CREDENTIAL_PARAMS if body_credentials else ()) + params


def _shape_text(shape: Shape | None) -> str | list[str] | None:
    return list(shape) if isinstance(shape, tuple) else shape


def _return_difference(operation: Operation, site: SiteOperation) -> str | None:
    ours, theirs = operation.returns, site.returns
    if theirs is None:
        return "the site declares no return value"
    if isinstance(ours, str):
        if isinstance(theirs, str):
            return None if theirs in (ours, "anyType") else f"the site returns {theirs}, khaosync reads a {ours}"
        return f"the site returns a structure ({', '.join(theirs)}), khaosync reads a {ours}"
    if isinstance(theirs, str):
        if operation.name == "ExportStockCompressed" and theirs in ("string", "base64Binary"):
            return None  # the client also reads a bare base64 string
        return f"the site returns a {theirs}, khaosync reads a structure ({', '.join(ours)})"
    lacking = [path for path in ours if path not in theirs]
    if lacking:
        return f"the site's structure lacks {', '.join(lacking)} (it has {', '.join(theirs) or 'no fields'})"
    return None


def _param_match(ours: tuple[Param, ...], site: SiteOperation) -> tuple[list[str], list[WsdlParam]]:
    our_names = [p.name for p in ours]
    site_names = {p.name for p in site.params}
    missing = [n for n in our_names if n not in site_names]
    extra = [WsdlParam(name=p.name, xsd_type=p.xsd_type, required=p.required)
             for p in site.params if p.name not in our_names]
    return missing, extra


def _compare(operation: Operation, site: SiteOperation, settings: KhaosSettings, advice: list[str]) -> OperationReport:
    ours = sent_params(operation, settings)
    our_names = [p.name for p in ours]
    missing, extra = _param_match(ours, site)
    extra_required = [p.name for p in extra if p.required is True]
    notes: list[str] = []
    lowered = {p.name.lower(): p.name for p in site.params}
    for name in missing:
        if name.lower() in lowered:
            notes.append(f"{name}: the site spells it {lowered[name.lower()]}")
    optional_unknown = [p.name for p in extra if p.required is None]
    if optional_unknown:
        notes.append(f"the site also takes {', '.join(optional_unknown)} (rpc style: the WSDL cannot say whether "
                     "they are optional; khaosync does not send them)")
    site_by_name = {p.name: p for p in site.params}
    differences = [
        f"{p.name}: khaosync sends {p.xsd_type}, the site declares {site_by_name[p.name].xsd_type}"
        for p in ours
        if p.name in site_by_name and site_by_name[p.name].xsd_type not in (None, p.xsd_type)
    ]
    return_difference = _return_difference(operation, site)
    if missing or extra_required:
        advice.append(_signature_advice(operation, site, settings, missing, extra_required))
    if return_difference:
        advice.append(f"{site.name}: {return_difference}; {_return_setting(operation)}")
    return OperationReport(
        name=site.name, our_name=operation.name, soap_action=site.soap_action,
        params=[WsdlParam(name=p.name, xsd_type=p.xsd_type, required=p.required) for p in site.params],
        status="different_signature" if missing or extra_required or return_difference else "used",
        sent_params=our_names, missing_params=missing, extra_required_params=extra_required,
        extra_params=[p.name for p in extra], type_differences=differences,
        returns=_shape_text(site.returns), reads=_shape_text(operation.returns), return_difference=return_difference,
        notes=notes,
    )


def _signature_advice(operation: Operation, site: SiteOperation, settings: KhaosSettings,
                      missing: list[str], extra_required: list[str]) -> str:
    declared = ", ".join(p.name for p in site.params) or "no parameters"
    if operation.form_setting:
        for form in operation.forms:
            if form == operation.form_name(settings):
                continue
            other_missing, other_extra = _param_match(sent_params(operation, settings, form), site)
            if not other_missing and not any(p.required for p in other_extra):
                return f"{site.name}: the site declares ({declared}): set {operation.hint}: {form}"
    parts = []
    if missing:
        parts.append(f"lacks {', '.join(missing)}")
    if extra_required:
        parts.append(f"requires {', '.join(extra_required)}")
    creds = [p.name for p in CREDENTIAL_PARAMS]
    if any(name in creds for name in missing):
        return (f"{site.name}: the site declares ({declared}) without {', '.join(creds)}: "
                "set khaos.credentials.mode: session, or remove khaos.credentials")
    return f"{site.name}: the site declares ({declared}), {' and '.join(parts)}: no setting covers it; report it"


def _return_setting(operation: Operation) -> str:
    if operation.hint:
        return f"see {operation.hint}"
    return "no setting covers it; report it"


def _unused(site: SiteOperation, settings: KhaosSettings) -> OperationReport:
    notes: list[str] = []
    ours = next((op for op in EXPECTED_OPERATIONS.values() if site_method_name(settings, op.name) == site.name), None)
    if ours is not None and not ours.is_called(settings):
        if ours.called_when == "session":
            notes.append("khaosync calls it only when khaos.credentials.mode is session")
        else:
            setting = "true" if ours.called_when == "compressed_stock" else "false"
            notes.append(f"khaosync calls it only when khaos.compressed_stock is {setting}")
    return OperationReport(name=site.name, status="unused", soap_action=site.soap_action,
                           params=[WsdlParam(name=p.name, xsd_type=p.xsd_type, required=p.required) for p in site.params],
                           extra_params=[p.name for p in site.params], returns=_shape_text(site.returns), notes=notes)


def discover(wsdl_bytes: bytes, settings: KhaosSettings) -> DiscoverReport:
    """Compare a site's WSDL with what khaosync sends and reads. ``report.ok`` is the one-line verdict.

    Example::

        report = discover(client.fetch_wsdl(), profile.khaos)
        for line in report.advice:
            print(line)
    """
    wsdl = parse_wsdl(wsdl_bytes)
    site_operations = wsdl.operations
    by_name = {op.name: op for op in site_operations}
    claimed: set[str] = set()
    reports: list[OperationReport] = []
    advice: list[str] = []
    for operation in EXPECTED_OPERATIONS.values():
        if not operation.is_called(settings):
            continue
        name = site_method_name(settings, operation.name)
        site = by_name.get(name)
        if site is None:
            reports.append(_missing(operation, name, settings, site_operations, advice))
            continue
        claimed.add(name)
        reports.append(_compare(operation, site, settings, advice))
    reports.extend(_unused(op, settings) for op in site_operations if op.name not in claimed)
    _other_settings(by_name, settings, advice)
    service, endpoint = wsdl.service()
    styles = sorted({op.style for op in site_operations})
    namespace = settings.body_namespace or _common_namespace(site_operations)
    return DiscoverReport(
        service=service, target_namespace=wsdl.root.get("targetNamespace"), endpoint=endpoint,
        style=",".join(styles) or None, body_namespace=namespace, operations=reports, advice=advice,
        notes=_site_notes(wsdl, site_operations, endpoint, settings, advice),
    )


def _other_settings(by_name: dict[str, SiteOperation], settings: KhaosSettings, advice: list[str]) -> None:
    """Settings that switch between published methods: say when the other one is the one the site has."""
    compressed = site_method_name(settings, "ExportStockCompressed")
    plain = site_method_name(settings, "ExportStock")
    if settings.compressed_stock and compressed not in by_name and plain in by_name:
        advice.append(f"{compressed}: not published, {plain} is: set khaos.compressed_stock: false")


def _common_namespace(site_operations: list[SiteOperation]) -> str | None:
    namespaces = [op.namespace for op in site_operations if op.namespace]
    return max(set(namespaces), key=namespaces.count) if namespaces else None


def _missing(operation: Operation, name: str, settings: KhaosSettings,
             site_operations: list[SiteOperation], advice: list[str]) -> OperationReport:
    names = [op.name for op in site_operations]
    # Similar names first, then operations that take exactly the parameters we send.
    ours = {p.name for p in operation.params_for(settings)}
    suggestions = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    suggestions += [op.name for op in site_operations
                    if ours and {p.name for p in op.params} >= ours and op.name not in suggestions][:3]
    notes = []
    if name != operation.name:
        notes.append(f"khaos.methods renames {operation.name} to {name}")
    if suggestions:
        notes.append(f"if the site calls it {suggestions[0]}, set khaos.methods.{operation.name}: {suggestions[0]}")
        advice.append(f"{name}: not published; if the site calls it {suggestions[0]}, "
                      f"set khaos.methods.{operation.name}: {suggestions[0]}")
    elif operation.hint:
        advice.append(f"{name}: not published; see {operation.hint}")
    else:
        advice.append(f"{name}: not published, nothing similar; set khaos.methods.{operation.name} to the site's name")
    return OperationReport(name=name, our_name=operation.name, status="expected_missing",
                           sent_params=[p.name for p in sent_params(operation, settings)],
                           reads=_shape_text(operation.returns), suggestions=suggestions, notes=notes)


def _site_notes(wsdl: Wsdl, site_operations: list[SiteOperation], endpoint: str | None, settings: KhaosSettings,
                advice: list[str]) -> list[str]:
    notes: list[str] = []
    namespaces = sorted({op.namespace for op in site_operations if op.namespace})
    if settings.body_namespace and any(ns != settings.body_namespace for ns in namespaces):
        advice.append(f"the site's method elements are in {', '.join(namespaces)}; khaos.body_namespace says "
                      f"{settings.body_namespace}: remove the setting to take the WSDL's")
    elif len(namespaces) > 1:
        notes.append(f"the site's operations use several namespaces ({', '.join(namespaces)}); khaosync sends each "
                     "in the most common one")
    literal = sorted({op.name for op in site_operations if op.use == "literal" or op.style == "document"})
    if literal:
        advice.append(f"the site publishes literal (not rpc/encoded) operations ({', '.join(literal[:5])}"
                      f"{', ...' if len(literal) > 5 else ''}); khaosync sends rpc/encoded: verify on site")
    if endpoint and endpoint.rstrip("/") != settings.soap_url.rstrip("/"):
        notes.append(f"the WSDL's endpoint is {endpoint}; khaos.soap_url is {settings.soap_url}")
    return notes


__all__ = ["DiscoverReport", "EXPECTED_OPERATIONS", "OperationReport", "WsdlParam", "discover", "parse_wsdl"]
