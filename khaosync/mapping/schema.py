"""The mapping file: its schema, the loader, and a plain-words account of what a file does.

A mapping file is YAML validated by the pydantic models below (unknown keys are refused, so a
misspelt key never silently falls back to a default). Every key has a default, the defaults
are ``mappings/default.yaml``, and every key is documented in ``docs/mappings.md``.

A profile lists one or more files (``profile.mappings``); they are combined section by
section: a key a later file sets replaces the earlier value *whole* (so a site file that
lists its own ``consent.mailing_status`` does not inherit the default's ids).

A bad file fails with a ``ConfigError`` naming the file, the key path and the reason, never
a traceback: ``mappings/site.yaml: consent.mailing_status.6: expected one of opt_in,
opt_out, no_decision, got 'maybe'``.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from khaosync.errors import ConfigError
from khaosync.yaml_files import describe, read_text_file, read_yaml
from khaosync.findings import TYPES
from khaosync.ometria.models import CURRENCIES

DEFAULT_MAPPING_PATH = "mappings/default.yaml"
PACKAGED_DEFAULT = "default.yaml"  # khaosync/mapping/default.yaml: the same file, shipped as package data

Decision = Literal["opt_in", "opt_out", "no_decision"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_template(template: str | None, allowed: set[str]) -> str | None:
    if template is None:
        return None
    try:
        names = _template_fields(template)
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}): {template!r}") from None
    unknown = sorted(n for n in names if n not in allowed)
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use {', '.join('{' + a + '}' for a in sorted(allowed))}")
    if not template.startswith(("https://", "http://")):
        raise ValueError(f"must be an absolute http(s) URL template: {template!r}")
    return template


# -- identity ---------------------------------------------------------------------------------


class Identity(_Section):
    """Which KC ids become Ometria identifiers. Never an email or a name: they change and are personal."""

    collection: str = Field("khaos", min_length=1, description="the Ometria contact collection")
    contact_id: Literal["contact_id"] = Field("contact_id", description="KC CONTACT_ID becomes the contact's id")
    customer_id: Literal["company_id", "contact_id"] = Field(
        "company_id", description="KC COMPANY_ID (or CONTACT_ID) becomes customer_id and order customer.id")


# -- consent ----------------------------------------------------------------------------------


VENDOR_DO_NOT_USE = 6  # KSDXMLCustomer.xml's default list: "6 - Do not use"


class ConsentWriteBack(_Section):
    """What ``consent push`` writes to KC for an Ometria opt-out: the contact's EMAILSUBSCRIBE 0
    always; the company's MAILING_STATUS as below (it also stops post and other contacts)."""

    opt_out_mailing_status: int | None = Field(
        None, description="the site's 'do not mail' MAILING_STATUS id; null: 6 (the vendor's 'Do not use') "
                          "when it is listed as opt_out, else the lowest id listed as opt_out")
    company_status: Literal["when_every_contact_opted_out", "never"] = Field(
        "when_every_contact_opted_out",
        description="set it only when every contact of the company with an email is then opted out")


class Consent(_Section):
    """KC's consent fields to ``marketing_optin``. Opt-out always wins; opt-in is never inferred."""

    mailing_status: dict[int, Decision] = Field(
        # The vendor's default list (KSDXMLCustomer.xml): 1-3 our use, 4-5 catalogues or order
        # correspondence only, 6 do not use, 7 gone away, 8 deceased.
        default_factory=lambda: {1: "opt_in", 2: "opt_in", 3: "opt_in", 4: "opt_out", 5: "opt_out", 6: "opt_out",
                                 7: "opt_out", 8: "opt_out"},
        description="the site's company MAILING_STATUS ids")
    email_subscribe_true: Decision = "opt_in"
    email_subscribe_false: Decision = "opt_out"
    company_opt_in_covers_contacts: bool = Field(
        False, description="a company opt-in alone opts in contacts that hold no decision of their own")
    write_back: ConsentWriteBack = Field(default_factory=ConsentWriteBack)

    @model_validator(mode="after")
    def _write_back_status_is_an_opt_out(self) -> "Consent":
        status = self.write_back.opt_out_mailing_status
        if status is not None and self.mailing_status.get(status) != "opt_out":
            raise ValueError(f"consent.write_back.opt_out_mailing_status {status} must be listed as opt_out in "
                             "consent.mailing_status")
        return self

    def write_back_status(self) -> int | None:
        """The MAILING_STATUS consent push sets for a company, or None: never."""
        if self.write_back.company_status == "never":
            return None
        if self.write_back.opt_out_mailing_status is not None:
            return self.write_back.opt_out_mailing_status
        if self.mailing_status.get(VENDOR_DO_NOT_USE) == "opt_out":
            return VENDOR_DO_NOT_USE  # not 4 or 5, which still allow catalogues or order mail
        return min((k for k, v in self.mailing_status.items() if v == "opt_out"), default=None)


# -- contacts ---------------------------------------------------------------------------------


class Contacts(_Section):
    inactive: Literal["send", "skip"] = "send"
    invalid_email: Literal["omit", "hold"] = "omit"
    shared_email: Literal["skip", "survivor_most_recent_order", "survivor_oldest_contact"] = \
        "survivor_most_recent_order"
    phone_country_code: str | None = Field("44", description="calling code for national numbers; null: E.164 only")
    properties: dict[str, str] = Field(
        default_factory=lambda: {"LOYALTY_TIER": "loyalty_tier", "SOURCE": "acquisition_source"},
        description="company ADDITIONAL field name -> contact property name")
    country_from: Literal["invoice_address", "none"] = "invoice_address"

    @field_validator("phone_country_code")
    @classmethod
    def _digits(cls, v: str | None) -> str | None:
        if v is not None and not (v.isdigit() and 1 <= len(v) <= 3 and not v.startswith("0")):
            raise ValueError(f"a calling code is 1-3 digits without + or leading 0 (44, 353, 1): {v!r}")
        return v

    @field_validator("properties")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for source, target in v.items():
            if not source or not target:
                raise ValueError("property names must not be empty")
        if len(set(v.values())) != len(v):
            raise ValueError("two ADDITIONAL fields map to the same property")
        return v


# -- orders -----------------------------------------------------------------------------------


class InvoiceStages(_Section):
    """The site's invoice stage ids (Sales Invoice Manager), grouped by what they mean for an order."""

    cancelled: list[int] = [1]
    released: list[int] = [9]
    in_progress: list[int] = [10, 11, 12, 13, 14, 15, 20]
    held: list[int] = [17, 18, 19, 21]
    despatched: list[int] = [16]
    complete: list[int] = [70, 71, 72, 73]

    @model_validator(mode="after")
    def _each_stage_once(self) -> "InvoiceStages":
        seen: dict[int, str] = {}
        for group in ("cancelled", "released", "in_progress", "held", "despatched", "complete"):
            for stage in getattr(self, group):
                if stage in seen:
                    raise ValueError(f"stage {stage} is in both {seen[stage]} and {group}")
                seen[stage] = group
        return self

    def group_of(self, stage_id: int | None) -> str | None:
        if stage_id is None:
            return None
        for group in ("cancelled", "released", "in_progress", "held", "despatched", "complete"):
            if stage_id in getattr(self, group):
                return group
        return "unknown"


class Statuses(_Section):
    """The Ometria ``status`` word for each state of a sales order."""

    pending: str = "pending"
    partially_despatched: str = "partially_shipped"
    despatched: str = "shipped"
    complete: str = "complete"
    cancelled: str = "cancelled"
    refunded: str = "refunded"
    partial_refund: str = "partial_refund"


class Totals(_Section):
    discount_sign: Literal["negative", "positive"] = "negative"
    prices: Literal["tax_exclusive", "tax_inclusive"] = "tax_exclusive"


class StoreRule(_Section):
    """Ometria ``store`` by KC ``SITE``; ``default`` for any other site (null: not sent)."""

    default: str | None = None
    by_site: dict[str, str] = Field(default_factory=dict)

    def pick(self, site: str) -> str | None:
        return self.by_site.get(site, self.default)


class ChannelRule(_Section):
    """Ometria ``channel`` by KC ``SALES_SOURCE``; ``default`` for any other source (null: not sent)."""

    default: str | None = "online"
    by_sales_source: dict[str, str] = Field(
        default_factory=lambda: {"Web": "online", "Phone": "phone", "Amazon": "marketplace"})

    def pick(self, sales_source: str) -> str | None:
        return self.by_sales_source.get(sales_source, self.default)


class Orders(_Section):
    trigger: Literal["placed", "released", "despatched"] = "despatched"
    invoice_stages: InvoiceStages = Field(default_factory=InvoiceStages)
    statuses: Statuses = Field(default_factory=Statuses)
    totals: Totals = Field(default_factory=Totals)
    store: StoreRule = Field(default_factory=StoreRule)
    channel: ChannelRule = Field(default_factory=ChannelRule)
    tracking: bool = True
    coupon_from_keycode: bool = True


# -- products ---------------------------------------------------------------------------------

PRODUCT_URL_FIELDS = {"stock_id", "stock_code", "style_code", "other_ref"}
IMAGE_URL_FIELDS = {"file_name", "stock_code", "stock_id"}


class ListingRule(_Section):
    store: str = Field(min_length=1)
    url_template: str | None = None
    currency: str | None = None

    @field_validator("url_template")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_template(v, PRODUCT_URL_FIELDS)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        if v is not None and v not in CURRENCIES:
            raise ValueError(f"not an ISO 4217 currency: {v!r}")
        return v


class Products(_Section):
    id: Literal["stock_id"] = Field("stock_id", description="KC's stable StockID; never the stock code")
    variants: Literal["children", "separate"] = "children"
    currency: str = "GBP"
    price: Literal["gross", "net"] = "gross"
    url_template: str | None = "https://shop.example.co.uk/p/{style_code}"
    image_url_template: str | None = "https://shop.example.co.uk/images/{file_name}"
    attributes: dict[str, str] = Field(
        default_factory=lambda: {"CATEGORY": "category", "SEASON": "season", "COLOUR_FAMILY": "colour_family"},
        description="stock USER_DEFINED field name -> attribute type")
    manufacturer_attribute: str | None = "brand"
    scs_attributes: dict[Literal["style", "colour", "size"], str] = Field(
        default_factory=lambda: {"colour": "colour", "size": "size"})
    listings: list[ListingRule] = Field(default_factory=list)
    flag_incomplete: bool = True
    in_stock_statuses: list[int] = Field(
        default_factory=lambda: [0, 5],
        description="ExportStockStatus STATUS values that mean 'can be bought' (0 in stock, 5 not stock controlled)")
    stock_type_attributes: dict[Literal["stock_top_type", "stock_type", "stock_mid_type", "stock_sub_type"], str] = \
        Field(default_factory=dict, description="KC stock type level -> attribute type")

    @field_validator("in_stock_statuses")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        wrong = [s for s in v if not 0 <= s <= 5]
        if wrong:
            raise ValueError(f"KC stock STATUS values are 0-5, not {wrong}")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in CURRENCIES:
            raise ValueError(f"not an ISO 4217 currency: {v!r}")
        return v

    @field_validator("url_template")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_template(v, PRODUCT_URL_FIELDS)

    @field_validator("image_url_template")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        return _check_template(v, IMAGE_URL_FIELDS)


# -- the file ---------------------------------------------------------------------------------


class Mapping(_Section):
    """One site's mapping rules (a file, or several combined)."""

    version: Literal[1] = 1
    identity: Identity = Field(default_factory=Identity)
    consent: Consent = Field(default_factory=Consent)
    contacts: Contacts = Field(default_factory=Contacts)
    orders: Orders = Field(default_factory=Orders)
    products: Products = Field(default_factory=Products)
    owners: dict[str, str] = Field(default_factory=dict, description="exception type -> owner")
    sources: tuple[str, ...] = Field(default=(), description="the files this came from (set by the loader)")

    @field_validator("owners")
    @classmethod
    def _known_types(cls, v: dict[str, str]) -> dict[str, str]:
        for name, owner in v.items():
            if name not in TYPES:
                raise ValueError(f"unknown exception type {name!r}; known: {', '.join(sorted(TYPES))}")
            if not owner.strip():
                raise ValueError(f"{name}: owner must not be empty")
        return v


# -- loading ----------------------------------------------------------------------------------


def packaged_default_text() -> str:
    return resources.files("khaosync.mapping").joinpath(PACKAGED_DEFAULT).read_text(encoding="utf-8")


def _read_source(path: str | Path) -> tuple[str, str]:
    """(text, name) of one mapping file; the default falls back to the copy in the package."""
    p = Path(path)
    if p.is_file():
        return read_text_file(p, "mapping file"), str(p)
    if str(path) == DEFAULT_MAPPING_PATH:
        # No mappings/ folder where khaosync runs (a cron job's working folder): the shipped default.
        return packaged_default_text(), "khaosync/mapping/default.yaml (packaged default)"
    raise ConfigError(f"mapping file {p} not found")


def parse_mapping(text: str, source: str = "<mapping>") -> Mapping:
    """Validate one file's text; errors name ``source``, the key path and the reason."""
    data = read_yaml(text, source)
    try:
        return Mapping.model_validate({**data, "sources": (source,)})
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, "mapping", "docs/mappings.md")) from None


def combine(layers: list[dict]) -> dict:
    """Later layers win section by section, key by key; a key's value is replaced whole."""
    out: dict[str, Any] = {}
    for layer in layers:
        for section, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(section), dict):
                out[section] = {**out[section], **value}
            else:
                out[section] = value
    return out


def load_mapping(paths: list[str] | tuple[str, ...] | str | Path | None = None) -> Mapping:
    """Load and validate the mapping files (default ``["mappings/default.yaml"]``), combined in order."""
    if paths is None:
        paths = [DEFAULT_MAPPING_PATH]
    if isinstance(paths, (str, Path)):
        paths = [str(paths)]
    if not paths:
        raise ConfigError("no mapping file configured (profile.mappings is empty)")
    layers, names = [], []
    for path in paths:
        text, name = _read_source(path)
        parse_mapping(text, name)  # each file alone first, so an error names its own file
        layers.append(read_yaml(text, name))
        names.append(name)
    if len(layers) == 1:
        return parse_mapping(text, names[0])
    joined = " + ".join(names)
    try:
        return Mapping.model_validate({**combine(layers), "sources": tuple(names)})
    except ValidationError as exc:
        raise ConfigError(describe(exc, joined, "mapping", "docs/mappings.md")) from None


# -- what a mapping does, in words (``khaosync mappings check``) -------------------------------


def _decision_words(d: str) -> str:
    return {"opt_in": "opted in", "opt_out": "opted out", "no_decision": "no decision (not sent)"}[d]


def explain(mapping: Mapping) -> dict[str, list[str]]:
    """What this mapping would do, section by section, in plain sentences."""
    from khaosync.findings import owner_of

    ident, consent, contacts, orders, products = (mapping.identity, mapping.consent, mapping.contacts,
                                                   mapping.orders, mapping.products)
    out: dict[str, list[str]] = {}
    out["identity"] = [
        f"contacts go to collection {ident.collection!r}",
        "contact id = KC CONTACT_ID (stable, not personal)",
        f"customer_id and order customer.id = KC {ident.customer_id.upper()}",
    ]
    statuses = [f"MAILING_STATUS {k} -> {_decision_words(v)}" for k, v in sorted(consent.mailing_status.items())]
    out["consent"] = statuses + [
        "any other MAILING_STATUS id -> consent_gap exception; consent not sent (a contact opt-out still is)",
        "blank MAILING_STATUS -> no company decision",
        f"EMAILSUBSCRIBE -1 -> {_decision_words(consent.email_subscribe_true)}; "
        f"0 -> {_decision_words(consent.email_subscribe_false)}; blank -> no decision",
        "an opt-out on the company or the contact wins; nothing else is ever sent as opted in"
        + ("; a company opt-in covers contacts without their own decision" if consent.company_opt_in_covers_contacts
           else "; a contact is opted in only by its own EMAILSUBSCRIBE"),
        "@force_optin is never sent",
    ]
    policy = {
        "skip": "every contact sharing it is sent without the email",
        "survivor_most_recent_order": "the contact whose company ordered most recently keeps it; the others are sent without it",
        "survivor_oldest_contact": "the contact with the lowest CONTACT_ID keeps it; the others are sent without it",
    }[contacts.shared_email]
    out["contacts"] = [
        f"an email on several KC contacts: {policy} (one identifier_conflict exception per email)",
        f"inactive contacts: {contacts.inactive}",
        "an email Ometria would refuse: " + ("the contact is sent without it" if contacts.invalid_email == "omit"
                                              else "the contact is held"),
        "phones: E.164 as is" + (f"; national numbers get +{contacts.phone_country_code}"
                                 if contacts.phone_country_code else "; others are left out"),
    ] + [f"company ADDITIONAL {k} -> properties.{v}" for k, v in sorted(contacts.properties.items())]
    trigger = {"placed": "as soon as it is staged", "released": "once an invoice is released (or later)",
               "despatched": "once its first invoice is issued"}[orders.trigger]
    stages = orders.invoice_stages
    s = orders.statuses
    sign = "+" if orders.totals.discount_sign == "negative" else "-"
    if orders.totals.prices == "tax_exclusive":
        formula = f"grand_total = subtotal {sign} discount + tax + shipping (subtotal, unit_price and shipping ex tax)"
    else:
        formula = f"grand_total = subtotal {sign} discount + shipping (tax-inclusive; tax reported, not added)"
    out["orders"] = [
        f"an order is first sent {trigger}; one already mapped is always kept up to date",
        f"invoice stages: cancelled {stages.cancelled}, released {stages.released}, in progress {stages.in_progress}, "
        f"held {stages.held}, despatched {stages.despatched}, complete {stages.complete}",
        f"status: nothing despatched {s.pending!r}; part {s.partially_despatched!r}; all {s.despatched!r}; "
        f"all and archived {s.complete!r}; cancelled {s.cancelled!r} (invalid); full refund {s.refunded!r} (invalid); "
        f"partial refund {s.partial_refund!r}",
        formula + "; must equal KC ORDER_AMOUNT to the penny or the order is held (total_mismatch)",
        f"store by SITE: {dict(orders.store.by_site)} (else {orders.store.default!r})",
        f"channel by SALES_SOURCE: {dict(orders.channel.by_sales_source)} (else {orders.channel.default!r})",
        "tracking numbers in properties.tracking" if orders.tracking else "no tracking details",
    ]
    out["products"] = [
        "product id = KC STOCK_ID (a renamed stock code keeps its product); sku = the current stock code",
        ("SCS children are variants of their style (is_variant, own id = child STOCK_ID; order lines "
         "product_id = style, variant_id = child)") if products.variants == "children"
        else "every stock item is a product of its own",
        f"price: sell price {'plus VAT' if products.price == 'gross' else 'ex VAT'} in {products.currency}",
        f"url: {products.url_template or '(none)'}; image: {products.image_url_template or '(none)'}",
    ] + [f"USER_DEFINED {k} -> attribute {v!r}" for k, v in sorted(products.attributes.items())] + (
        [f"manufacturer -> attribute {products.manufacturer_attribute!r}"] if products.manufacturer_attribute else []
    ) + [f"listing for store {rule.store!r}" for rule in products.listings] + (
        ["products without title, price above zero or url: flagged product_mismatch"] if products.flag_incomplete else [])
    out["owners"] = [f"{name}: {owner_of(name, mapping.owners)}" for name in sorted(TYPES)]
    return out
