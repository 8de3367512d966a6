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

    # -- handlers: each returns the text of <return> ------------------------------------
    def _get_site_list(self, world: World, req: Request) -> str:
        sites = world.get_meta("sites") or DEFAULT_SITES
        pairs = [(s["site_id"], s["site_name"]) if isinstance(s, dict) else (s[0], s[1]) for s in sites]
        return render.render_site_list(pairs)

    def _get_company_list(self, world: World, req: Request) -> str:
        since = req.when("LastUpdated")
        docs = world.iter("company", updated_since=_canonical(since))
        # The SQL filter compares canonical strings; check as datetimes too, as KC would.
        codes = [d["company_code"] for d in docs if _after(d["updated"], since)]
        return render.render_company_list(codes)

    def _export_company(self, world: World, req: Request) -> str:
        if req.number("MappingType") != 1:
            raise client_fault("ExportCompany: MappingType must be 1 (URN)")
        docs = self._by_field(world, "company", "company_code", kc_list(req.text("CompanyCode")))
        return render.document("COMPANYS", self._render_records(world, "company", docs, render.render_company))

    def _import_company(self, world: World, req: Request) -> str:
        req.number("Method")  # required and numeric; the sandbox has one import behaviour: update
        root = _parse_customers(req.text("Customers") or "")
        clock = world.clock or datetime.now(LONDON).strftime(KC_FORMAT)
        urns: list[str] = []
        for company in root.findall("COMPANY"):
            code = (company.findtext("COMPANY_CODE") or "").strip()
            if not code:
                raise client_fault("ImportCompany: COMPANY without COMPANY_CODE")
            # KSDXMLCustomer.xml: COMPANY_CLASS is "Mandatory", even when updating a customer.
            if not (company.findtext("COMPANY_CLASS") or "").strip():
                raise client_fault(f"ImportCompany {code}: COMPANY without COMPANY_CLASS")
            for doc in self._by_field(world, "company", "company_code", [code]):
                _apply_consent(doc, company)
                doc["updated"] = clock
                world.put("company", doc)
                urns.append(code)
        return render.render_import_result(list(dict.fromkeys(urns)))

    def _get_stock_list(self, world: World, req: Request) -> str:
        if req.number("DateType") != -1:
            raise client_fault("GetStockList: only DateType -1 (last changed) is supported")
        since = req.when("DateValue")
        item_type = req.number("StockItemType")
        items = [
            (d["stock_code"], d["parent_code"] or None)
            for d in world.iter("stock_item", updated_since=_canonical(since))
            if item_type in (0, d["stock_type"])
        ]
        return render.render_stock_list(items)

    def _stock_docs(self, world: World, req: Request, codes_param: str) -> list[dict]:
        mapping = req.number("MappingType")
        fields = {1: "stock_code", 2: "other_ref"}
        if mapping not in fields:
            raise client_fault(f"{req.method}: MappingType must be 1 (StockCode) or 2 (OtherRef)")
        since = req.when("LastUpdated")
        docs = self._by_field(world, "stock_item", fields[mapping], kc_list(req.text(codes_param)))
        return [d for d in docs if _after(d["updated"], since)]

    def _export_stock(self, world: World, req: Request) -> str:
        docs = self._stock_docs(world, req, "StockCode")
        return render.document("STOCK_ITEMS", self._render_records(world, "stock_item", docs, render.render_stock_item))

    def _export_stock_compressed(self, world: World, req: Request) -> str:
        if req.number("CompressionMethod") != 0:
            raise client_fault("ExportStockCompressed: CompressionMethod must be 0 (zip)")
        document = self._export_stock(world, req)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            # A fixed timestamp: the same world gives the same bytes.
            archive.writestr(zipfile.ZipInfo("StockExport.xml", date_time=(2000, 1, 1, 0, 0, 0)), document.encode("utf-8"))
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _export_stock_status(self, world: World, req: Request) -> str:
        req.number("SiteID")
        docs = self._stock_docs(world, req, "StockCodes")
        return render.document("STOCK_ITEMS", (render.render_stock_status(d) for d in docs))

    def _export_orders(self, world: World, req: Request) -> str:
        date_from, date_to = req.when("DateFrom"), req.when("DateTo")
        date_type = req.number("DateType")
        lo, hi = _canonical(date_from), _canonical(date_to)
        if date_type == 0:
            # Orders with no order date (a planted fault) have nothing to compare: never in range.
            docs = world.iter("sales_order", where="json_extract(doc, '$.order_date') >= ? AND json_extract(doc, '$.order_date') < ?", args=(lo, hi))
            keep = [d for d in docs if _in_range(_when(d["order_date"]), date_from, date_to)]
        elif date_type == 1:
            docs = world.iter("sales_order", where="updated >= ? AND updated < ?", args=(lo, hi))
            keep = [d for d in docs if _in_range(_when(d["updated"]), date_from, date_to)]
        else:
            raise client_fault("ExportOrders: DateType must be 0 (order date) or 1 (last changed)")
        return render.document("SALES_ORDERS", self._render_records(world, "sales_order", keep, render.render_sales_order))

    def _export_order_status(self, world: World, req: Request) -> str:
        mapping = req.number("MappingType")
        ids = kc_list(req.text("IDs"))
        if mapping == 3:
            docs = self._by_field(world, "sales_order", "sorder_code", ids)
        elif mapping == 4:
            docs = self._by_field(world, "sales_order", "associated_ref", ids)
        elif mapping == 5:
            docs = self._by_field(world, "sales_order", "sorder_id", [parse_int("IDs", i) for i in ids])
        else:
            raise client_fault("ExportOrderStatusEx: MappingType must be 3 (SOrderCode), 4 (AssociatedRef) or 5 (SOrderID)")
        date_from = req.when("DateFrom") if req.has("DateFrom") else None
        date_to = req.when("DateTo") if req.has("DateTo") else None
        include_tracking = req.flag("IncludeTracking", False)
        include_cancelled = req.flag("IncludeCancelled", False)
        stages_text = req.text("InvoiceStageIDs") or ""
        stage_ids = frozenset(parse_int("InvoiceStageIDs", s) for s in kc_list(stages_text)) or None
        out: list[str] = []
        for doc in docs:
            changed = _when(doc["updated"])
            if (date_from and (changed is None or changed < date_from)) or (date_to and (changed is None or changed >= date_to)):
                continue
            if not include_cancelled and render.order_status(doc) == "Cancelled":
                continue
            if stage_ids is not None and not any(inv["stage_id"] in stage_ids for inv in doc["invoices"]):
                continue
            out.append(render.render_order_status(doc, include_tracking=include_tracking, stage_ids=stage_ids))
        return render.document("ORDER_STATUSES", out)


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


def _apply_consent(doc: dict, company: Element) -> None:
    """Copy the consent fields the import carries; leave everything else as KC holds it."""
    try:
        if (status := company.find("MAILING_STATUS")) is not None:
            doc["mailing_status"] = kc_int(status.text, field="MAILING_STATUS")
        for address in company.findall("ADDRESSES/ADDRESS"):
            # KSDXMLCustomer.xml: "Either COUNTRY or COUNTRY_CODE must be specified".
            if not ((address.findtext("COUNTRY") or "").strip() or (address.findtext("COUNTRY_CODE") or "").strip()):
                raise client_fault(f"ImportCompany {doc['company_code']}: ADDRESS without COUNTRY or COUNTRY_CODE")
        # KSDXMLCustomer.xml: the contacts sit inside their address (ADDRESS/CONTACTS/CONTACT).
        for incoming in company.findall("ADDRESSES/ADDRESS/CONTACTS/CONTACT"):
            subscribe = incoming.find("EMAILSUBSCRIBE")
            if subscribe is None:
                continue
            for contact in _matching_contacts(doc, incoming):
                contact["email_subscribe"] = kc_bool(subscribe.text)
    except ConversionError as exc:
        raise client_fault(f"ImportCompany {doc['company_code']}: {exc}") from None


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
