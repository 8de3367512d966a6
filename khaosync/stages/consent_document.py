"""The ``ImportCompany`` document that writes opt-outs back to Khaos Control.

The shape is the vendor's (``reference/kc-vendor-samples/KSDXMLCustomer.xml`` and its field
comments), cut to what a consent change needs:

- ``COMPANYS/COMPANY`` with its ``COMPANY_CODE`` (the URN KC matches an existing customer on)
  and its ``COMPANY_CLASS``: "Mandatory", and "when updating a customer record this value must
  still be populated but will not update Khaos Control";
- ``MAILING_STATUS`` only when the company's status is to change (the site's "do not mail" id
  from the mapping, ``consent.write_back``);
- each contact inside its address, where the vendor puts contacts:
  ``ADDRESSES/ADDRESS{ADDRESS_ID, COUNTRY_CODE, CONTACTS/CONTACT{CONTACT_ID, EMAIL,
  EMAILSUBSCRIBE}}``. An address needs ``COUNTRY`` or ``COUNTRY_CODE`` ("Either ... must be
  specified"); the company-level ``COUNTRY_CODE`` carries the same comment and is sent too.

Nothing else is sent: whatever KC does with fields a document leaves out, a consent change
never carries a name, an address line or a price list from a stale copy over what KC holds now.
Whether a site blanks fields an update omits is on the verify-on-site list.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from khaosync.khaos.models import Address, Company


class DocumentError(ValueError):
    """A company whose change cannot be written in the vendor's shape (names the record)."""

    def __init__(self, company_id: str, reason: str):
        super().__init__(f"company:{company_id}: {reason}")
        self.company_id = company_id
        self.reason = reason


@dataclass(frozen=True)
class ContactOptOut:
    contact_id: int
    email: str


def _el(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def contact_address(company: Company, contact_id: int) -> Address:
    """The address a contact sits under: its own ``address_id`` when the staged model carries
    it, else the company's invoice address, else its first address."""
    contact = next((c for c in company.contacts if c.contact_id == contact_id), None)
    address_id = getattr(contact, "address_id", None)
    if address_id is not None:
        for address in company.addresses:
            if address.address_id == address_id:
                return address
    active = [a for a in company.addresses if not a.inactive] or list(company.addresses)
    invoice = [a for a in active if a.addr_type.strip().lower() == "invoice"]
    if invoice or active:
        return (invoice or active)[0]
    raise DocumentError(company.key, "no address to carry the contact (KC's document puts contacts inside one)")


def company_element(company: Company, opt_outs: list[ContactOptOut], mailing_status: int | None) -> str:
    """One ``COMPANY`` element: these contacts' EMAILSUBSCRIBE 0, and the status if given."""
    if not company.company_code.strip():
        raise DocumentError(company.key, "no COMPANY_CODE (URN): KC could not match the customer")
    if not company.company_class.strip():
        raise DocumentError(company.key, "no COMPANY_CLASS, which ImportCompany requires even for an update")
    by_address: dict[int, tuple[Address, list[ContactOptOut]]] = {}
    for change in sorted(opt_outs, key=lambda c: c.contact_id):
        address = contact_address(company, change.contact_id)
        if not address.country_code.strip():
            raise DocumentError(company.key, f"address {address.address_id} has no COUNTRY_CODE, which "
                                             "ImportCompany requires on every address")
        by_address.setdefault(address.address_id, (address, []))[1].append(change)
    parts = [_el("COMPANY_CODE", company.company_code.strip()), _el("COMPANY_CLASS", company.company_class.strip())]
    if mailing_status is not None:
        parts.append(_el("MAILING_STATUS", mailing_status))
    addresses = []
    for address_id in sorted(by_address):
        address, changes = by_address[address_id]
        contacts = "".join(
            "<CONTACT>" + _el("CONTACT_ID", c.contact_id) + _el("EMAIL", c.email) + _el("EMAILSUBSCRIBE", 0)
            + "</CONTACT>" for c in changes)
        addresses.append("<ADDRESS>" + _el("ADDRESS_ID", address.address_id)
                         + _el("COUNTRY_CODE", address.country_code.strip()) + f"<CONTACTS>{contacts}</CONTACTS>"
                         + "</ADDRESS>")
    if addresses:
        parts.append("<ADDRESSES>" + "".join(addresses) + "</ADDRESSES>")
    country = next((a.country_code.strip() for a, _ in by_address.values() if a.country_code.strip()), "")
    if not country:
        country = next((a.country_code.strip() for a in company.addresses if a.country_code.strip()), "")
    if not country:
        raise DocumentError(company.key, "no COUNTRY_CODE on any address, which ImportCompany requires")
    parts.append(_el("COUNTRY_CODE", country))
    return "<COMPANY>" + "".join(parts) + "</COMPANY>"


def document(elements: list[str]) -> str:
    return '<?xml version="1.0" encoding="utf-8"?><COMPANYS>' + "".join(elements) + "</COMPANYS>"
