"""What each Khaos Control method answers, over the sandbox world.

The transport (SOAP envelopes, the WSDL, parameter checks, faults, injected failures) is
``khaos_emulator.py``; this module is the site's data behind it. A handler takes the open
``World`` and the validated ``Request`` and returns either a ``str`` (the methods whose WSDL
return type is ``string``: an XML document) or a structure as plain Python (``dict`` for a
Delphi class such as ``TCompanyList``, ``list`` for a SOAP-ENC array), which the transport
encodes as the WSDL declares it.
"""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import datetime
from typing import Callable, Iterable
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from khaosync.khaos.convert import KC_FORMAT, LONDON, ConversionError, kc_bool, kc_int, kc_list
from khaosync.sandbox import khaos_render as render
from khaosync.sandbox.khaos_request import Request, client_fault, parse_int
from khaosync.sandbox.world import KEY_FIELD, World

DEFAULT_SITES = [(1, "Main")]
# SQLite's historical limit on bound parameters is 999; stay well under it.
_IN_CHUNK = 500


def _when(text: str | None) -> datetime | None:
    """A stored KC datetime (or None / empty / "no date")."""
    if not text or text.startswith("1899-12-3"):
        return None
    return datetime.fromisoformat(text)


def _canonical(dt: datetime) -> str:
    return dt.strftime(KC_FORMAT)


class KhaosMethods:
    """The handlers, one per published method; ``handlers()`` maps method names to them."""

    def handlers(self) -> dict[str, Callable[[World, Request], object]]:
        return {
            "GetSiteList": self._get_site_list,
            "GetCompanyList": self._get_company_list,
            "ExportCompany": self._export_company,
            "ImportCompany": self._import_company,
            "GetStockList": self._get_stock_list,
            "ExportStock": self._export_stock,
            "ExportStockCompressed": self._export_stock_compressed,
            "ExportStockStatus": self._export_stock_status,
            "ExportOrders": self._export_orders,
            "ExportOrderStatusEx": self._export_order_status,
        }

    # -- lookups -----------------------------------------------------------------------
    @staticmethod
    def _by_field(world: World, entity: str, field: str, values: list[str] | list[int]) -> list[dict]:
        """Records whose ``field`` is one of ``values``, in key order (unknown values: absent)."""
        found: dict[int, dict] = {}
        wanted: list = list(dict.fromkeys(values))
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            expr = "key" if field == KEY_FIELD[entity] else f"CAST(json_extract(doc, '$.{field}') AS TEXT)"
            for doc in world.iter(entity, where=f"{expr} IN ({marks})", args=tuple(chunk)):
                found[doc[KEY_FIELD[entity]]] = doc
        return [found[k] for k in sorted(found)]

    @staticmethod
    def _render_records(world: World, entity: str, docs: Iterable[dict], render_one: Callable[[dict], str]) -> list[str]:
        """Each record's element, or its planted raw bytes; ``serve_twice`` records twice."""
        overrides = world.raw_overrides(entity)
        twice = set((world.get_meta("serve_twice") or {}).get(entity, []))
        out: list[str] = []
        for doc in docs:
            key = doc[KEY_FIELD[entity]]
            element = render.text_of(overrides[key]) if key in overrides else render_one(doc)
            out.append(element)
            if key in twice:
                out.append(element)
        return out

    # -- handlers: a str (a document), or a structure as plain Python ----------------------
    def _get_site_list(self, world: World, req: Request) -> dict:
        return {"List": [{"SiteID": site_id, "SiteName": name} for site_id, name in _sites(world)]}

    def _get_company_list(self, world: World, req: Request) -> dict:
        since = req.when("LastUpdated")
        docs = world.iter("company", updated_since=_canonical(since))
        # The SQL filter compares canonical strings; check as datetimes too, as KC would.
        return {"List": [{"CompanyCode": d["company_code"]} for d in docs if _after(d["updated"], since)]}

    def _export_company(self, world: World, req: Request) -> str:
        if req.number("MappingType") != 1:
            raise client_fault("ExportCompany: MappingType must be 1 (URN)")
        docs = _changed_since(req, self._by_field(world, "company", "company_code", kc_list(req.text("CompanyCode"))))
        return render.document("COMPANYS", self._render_records(world, "company", docs, render.render_company))

    def _import_company(self, world: World, req: Request) -> dict:
        """KSDXMLCustomer.xml as an import: each COMPANY found by its COMPANY_CODE (URN);
        COMPANY_CLASS must be there even for an update ("this value must still be populated")
        but is not changed; an ADDRESS needs COUNTRY or COUNTRY_CODE; the consent fields are
        applied (MAILING_STATUS, and per contact, found by CONTACT_ID inside its address,
        EMAILSUBSCRIBE). A company the site does not hold is not created by the sandbox: it
        is left out of the answer, which lists each URN imported with its WEB_USER."""
        req.number("Method")
        root = _parse_customers(req.text("Customers") or "")
        clock = world.clock or datetime.now(LONDON).strftime(KC_FORMAT)
        imported: dict[str, str] = {}
        for company in root.findall("COMPANY"):
            code = (company.findtext("COMPANY_CODE") or "").strip()
            if not code:
                raise client_fault("ImportCompany: COMPANY without COMPANY_CODE")
            if not (company.findtext("COMPANY_CLASS") or "").strip():
                raise client_fault(f"ImportCompany {code}: COMPANY_CLASS is mandatory")
            for address in company.findall("ADDRESSES/ADDRESS"):
                if not ((address.findtext("COUNTRY") or "").strip() or (address.findtext("COUNTRY_CODE") or "").strip()):
                    raise client_fault(f"ImportCompany {code}: an ADDRESS needs COUNTRY or COUNTRY_CODE")
            for doc in self._by_field(world, "company", "company_code", [code]):
                if _apply_consent(doc, company):
                    doc["updated"] = clock
                    world.put("company", doc)
                imported[code] = doc["web_user"]
        return {"CustomerImport": [{"URN": urn, "WebUser": web} for urn, web in imported.items()]}

    def _get_stock_list(self, world: World, req: Request) -> dict:
        """Both forms sites use: ``(LastUpdated)`` (the real site's WSDL) and the connector's
        ``(DateType=-1, DateValue, StockItemType)``."""
        if req.has("DateValue"):
            if req.number("DateType") != -1:
                raise client_fault("GetStockList: only DateType -1 (last changed) is supported")
            since = req.when("DateValue")
            item_type = req.number("StockItemType") if req.has("StockItemType") else 0
        else:
            since = req.when("LastUpdated")
            item_type = 0
        items = [
            {"StockCode": d["stock_code"], "ParentCode": d["parent_code"] or ""}
            for d in world.iter("stock_item", updated_since=_canonical(since))
            if item_type in (0, d.get("stock_type", 1)) and _after(d["updated"], since)
        ]
        return {"Count": len(items), "List": items}

    def _stock_docs(self, world: World, req: Request, codes: list[str]) -> list[dict]:
        mapping = req.number("MappingType")
        fields = {1: "stock_code", 2: "other_ref"}
        if mapping not in fields:
            raise client_fault(f"{req.method}: MappingType must be 1 (StockCode) or 2 (OtherRef)")
        return _changed_since(req, self._by_field(world, "stock_item", fields[mapping], codes))

    def _export_stock(self, world: World, req: Request) -> str:
        docs = self._stock_docs(world, req, kc_list(req.text("StockCode")))
        if scs_export(world) == "separate":
            return render.document("STOCK_ITEMS", self._render_records(world, "stock_item", docs, render.render_stock_item))
        # Tree mode: a style parent carries its children in its SCS tree, and a child's own
        # code exports nothing (the connector asks for the parent: ParentCode or StockCode).
        docs = [d for d in docs if not d["parent_stock_id"]]
        parents = [d["stock_id"] for d in docs]
        variants: dict[int, list[dict]] = {}
        if parents:
            for child in self._by_field(world, "stock_item", "parent_stock_id", [str(p) for p in parents]):
                variants.setdefault(child["parent_stock_id"], []).append(child)
        return render.document("STOCK_ITEMS", self._render_records(
            world, "stock_item", docs, lambda d: render.render_stock_item(d, variants.get(d["stock_id"]))))

    def _export_stock_compressed(self, world: World, req: Request) -> dict:
        if req.number("CompressionMethod") != 0:
            raise client_fault("ExportStockCompressed: CompressionMethod must be 0 (zip)")
        document = self._export_stock(world, req)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            # A fixed timestamp: the same world gives the same bytes.
            archive.writestr(zipfile.ZipInfo("StockExport.xml", date_time=(2000, 1, 1, 0, 0, 0)), document.encode("utf-8"))
        return {"Data": buffer.getvalue()}

    def _export_stock_status(self, world: World, req: Request) -> str:
        """``StockCode`` on the real site's WSDL, ``StockCodes`` in newer clients: either."""
        codes = kc_list(req.text("StockCode") if req.has("StockCode") else req.text("StockCodes"))
        docs = self._stock_docs(world, req, codes)
        sites = _sites(world)
        site_id = req.text("SiteID") if req.has("SiteID") else None
        name = next((n for i, n in sites if str(i) == (site_id or "").strip()), sites[0][1])
        return render.render_stock_status(name, docs)

    def _export_orders(self, world: World, req: Request) -> str:
        """One order by its code (``ExportOrders($soc, 1)``): a list of codes is not a code,
        and an unknown one gives an empty document."""
        if req.number("MappingType") != 1:
            raise client_fault("ExportOrders: MappingType must be 1 (SOrderCode)")
        code = (req.text("OrderCode") or "").strip()
        docs = self._by_field(world, "sales_order", "sorder_code", [code]) if code else []
        return render.document("SALES_ORDERS", self._render_records(world, "sales_order", docs, render.render_sales_order))

    def _export_order_status(self, world: World, req: Request) -> str:
        """IDs by MappingType 3 (SOrderCode) or 4 (AssociatedRef); ``WebOnly`` keeps orders
        that came from a web channel. The connector's commented-out extras are accepted and
        have no effect here (what they do on a site is not published)."""
        mapping = req.number("MappingType")
        ids = kc_list(req.text("IDs"))
        if mapping == 3:
            docs = self._by_field(world, "sales_order", "sorder_code", ids)
        elif mapping == 4:
            docs = self._by_field(world, "sales_order", "associated_ref", ids)
        else:
            raise client_fault("ExportOrderStatusEx: MappingType must be 3 (SOrderCode) or 4 (AssociatedRef)")
        if req.has("WebOnly") and _xs_boolean("WebOnly", req.text("WebOnly") or ""):
            docs = [d for d in docs if (d.get("sales_source") or "").lower() == "web"]
        overrides = world.raw_overrides("order_status")
        out = [render.text_of(overrides[d["sorder_id"]]) if d["sorder_id"] in overrides
               else render.render_order_status(d) for d in docs]
        return render.document("STATUS_LIST", out)


def _changed_since(req: Request, docs: list[dict]) -> list[dict]:
    """An export's ``LastUpdated``: only what changed after it; 1899-12-31 (KC's "no date"),
    or none given, everything asked for."""
    if not req.has("LastUpdated"):
        return docs
    since = req.when("LastUpdated")
    return docs if since.year <= 1899 else [d for d in docs if _after(d["updated"], since)]


def scs_export(world: World) -> str:
    """How the site exports SCS children: "tree" (inside the parent) or "separate"."""
    return world.get_meta("scs_export") or "tree"


def _sites(world: World) -> list[tuple[int, str]]:
    sites = world.get_meta("sites") or DEFAULT_SITES
    return [(s["site_id"], s["site_name"]) if isinstance(s, dict) else (s[0], s[1]) for s in sites]


def _xs_boolean(name: str, text: str) -> bool:
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise client_fault(f"{name}: '{text}' is not a valid xs:boolean")


def _after(stored: str | None, since: datetime) -> bool:
    value = _when(stored)
    return value is not None and value > since


def _in_range(value: datetime | None, lo: datetime, hi: datetime) -> bool:
    return value is not None and lo <= value < hi


def _parse_customers(text: str) -> Element:
    try:
        root = DET.fromstring(text.encode("utf-8"), forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise client_fault(f"ImportCompany: Customers is not well-formed XML: {exc}") from None
    if root.tag != "COMPANYS":
        raise client_fault(f"ImportCompany: Customers must be a COMPANYS document, not {root.tag}")
    return root


def _apply_consent(doc: dict, company: Element) -> bool:
    """Apply the consent fields the import carries; leave everything else as KC holds it.
    True when something changed."""
    changed = False
    try:
        status = company.find("MAILING_STATUS")
        if status is not None and (status.text or "").strip():
            value = kc_int(status.text, field="MAILING_STATUS")
            changed |= doc["mailing_status"] != value
            doc["mailing_status"] = value
        for incoming in company.findall("ADDRESSES/ADDRESS/CONTACTS/CONTACT"):
            subscribe = incoming.find("EMAILSUBSCRIBE")
            if subscribe is None or not (subscribe.text or "").strip():
                continue
            value = kc_bool(subscribe.text)
            for contact in _matching_contacts(doc, incoming):
                changed |= contact["email_subscribe"] != value
                contact["email_subscribe"] = value
    except ConversionError as exc:
        raise client_fault(f"ImportCompany {doc['company_code']}: {exc}") from None
    return changed


def _matching_contacts(doc: dict, incoming: Element) -> list[dict]:
    """By CONTACT_ID when given; else by EMAIL within this one company (KC never matches
    companies by email, but a contact inside a known company can be found by it)."""
    contact_id = (incoming.findtext("CONTACT_ID") or "").strip()
    if contact_id:
        wanted = parse_int("CONTACT_ID", contact_id)
        return [c for c in doc["contacts"] if c["contact_id"] == wanted]
    email = (incoming.findtext("EMAIL") or "").strip().casefold()
    return [c for c in doc["contacts"] if email and (c["email"] or "").strip().casefold() == email]

__all__ = ["KhaosMethods"]
