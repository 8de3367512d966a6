"""The sandbox merchant's customers: companies with their contacts, addresses and consent.

Most companies are one retail customer with one contact; some have two or three contacts
(a household, a small trade account). Addresses come in pairs, Invoice and Delivery. Most
customers are in Great Britain and pay in pounds; some are in Ireland, France or Germany
(euros) or the United States (dollars).

Consent is held the KC way: ``mailing_status`` on the company (the vendor's default list: 1,
2, 3 mean "you may mail", 6 "do not use", 7 gone away, 8 deceased, ``None`` no decision held)
and ``email_subscribe`` per contact.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from random import Random
from typing import Sequence, TypeVar

from khaosync.sandbox.generator_calendar import between, kc, utc_z
from khaosync.sandbox.generator_catalogue import popularity

T = TypeVar("T")

FIRST_COMPANY_ID = 1001
FIRST_ADDRESS_ID = 5001
FIRST_CONTACT_ID = 7001

_FEMALE = ("Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Freya", "Lily", "Sophie", "Emily", "Charlotte",
           "Poppy", "Zoë", "Siobhán", "Aoife", "Priya", "Fatima", "Chloé", "Hannah", "Ruth", "Margaret",
           "Eleanor", "Alice", "Rosie", "Evie", "Jessica", "Ada", "Niamh")
_MALE = ("Oliver", "George", "Harry", "Noah", "Jack", "Leo", "Arthur", "Oscar", "Charlie", "Thomas", "James",
         "William", "Mohammed", "Rhys", "Callum", "Seán", "Hamish", "Tomasz", "Lukas", "Jean-Luc", "Ethan",
         "Daniel", "Samuel", "Joseph", "Idris", "Finley")
_SURNAMES = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
             "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke",
             "Patel", "Khan", "Lewis", "Harris", "Martin", "Cooper", "Hughes", "Edwards", "Turner", "Hill",
             "Moore", "Ward", "Morris", "King", "Watson", "Baker", "O'Brien", "Murphy", "Kelly", "MacDonald",
             "Campbell", "Stewart", "Nowak", "Müller", "Dubois", "Schmidt", "Fitzgerald", "Ahmed", "Singh",
             "Chen", "Nguyen", "Okafor", "Hussain", "Lloyd", "Price", "Bennett", "Parry", "Ellis", "Ashworth",
             "Pemberton")
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "post.example.org")

# (town, county, postcode district, telephone area code)
_GB_TOWNS = (
    ("Bath", "Somerset", "BA1", "01225"), ("Bristol", "City of Bristol", "BS8", "0117"),
    ("Leeds", "West Yorkshire", "LS6", "0113"), ("Manchester", "Greater Manchester", "M20", "0161"),
    ("York", "North Yorkshire", "YO31", "01904"), ("Edinburgh", "Midlothian", "EH10", "0131"),
    ("Glasgow", "Lanarkshire", "G12", "0141"), ("Cardiff", "South Glamorgan", "CF10", "029"),
    ("Norwich", "Norfolk", "NR2", "01603"), ("Brighton", "East Sussex", "BN1", "01273"),
    ("Oxford", "Oxfordshire", "OX2", "01865"), ("Cambridge", "Cambridgeshire", "CB1", "01223"),
    ("Exeter", "Devon", "EX4", "01392"), ("Harrogate", "North Yorkshire", "HG1", "01423"),
    ("London", "Greater London", "SW11", "020"), ("London", "Greater London", "N16", "020"),
    ("London", "Greater London", "E8", "020"), ("Belfast", "County Antrim", "BT9", "028"),
    ("Kendal", "Cumbria", "LA9", "01539"), ("Truro", "Cornwall", "TR1", "01872"),
)
_GB_STREETS = ("High Street", "Station Road", "Church Lane", "Victoria Road", "Mill Lane", "Park Avenue",
               "The Green", "Queen's Road", "Albert Terrace", "Orchard Close", "Castle Street", "Manor Way")
_ABROAD = {
    # country: (currency, [(town, region, postcode prefix)], streets, street number goes first)
    "IE": ("EUR", (("Dublin", "County Dublin", "D02"), ("Cork", "County Cork", "T12"),
                   ("Galway", "County Galway", "H91")),
           ("Main Street", "Strand Road", "Patrick Street"), True),
    "FR": ("EUR", (("Paris", "Île-de-France", "750"), ("Lyon", "Auvergne-Rhône-Alpes", "690"),
                   ("Bordeaux", "Nouvelle-Aquitaine", "330")), ("rue de la République", "avenue Jean Jaurès"), True),
    "DE": ("EUR", (("Berlin", "Berlin", "10"), ("München", "Bayern", "80"), ("Hamburg", "Hamburg", "20")),
           ("Hauptstraße", "Bahnhofstraße", "Gartenweg"), False),
    "US": ("USD", (("New York", "NY", "100"), ("Boston", "MA", "021"), ("Portland", "OR", "972")),
           ("Main Street", "Elm Street", "Oak Avenue"), True),
}
# The vendor's default MAILING_STATUS list (KSDXMLCustomer.xml): 1-3 our use (with or without
# third parties), 4-5 catalogues/order correspondence only, 6 do not use, 7 gone away, 8 deceased.
DO_NOT_MAIL = 6
OPT_OUT_STATUSES = frozenset({4, 5, 6, 7, 8})

_COUNTRIES = (("GB", 0.88), ("IE", 0.05), ("FR", 0.03), ("DE", 0.02), ("US", 0.02))
_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_UNSUBSCRIBE_REASONS = ("Unsubscribed via email footer link", "Unsubscribed via preference centre",
                        "Marked as spam")
BAD_EMAILS = ("{local}@", "no email", "{local}@@example.com", "{first} {last}@example.com", "{local}.example.com")

MALFORMED_COMPANY_ROLES = ("bad_email", "missing_code", "no_contacts", "broken_xml", "hostile_entity_ref",
                           "hostile_entity_decl")


@dataclass(slots=True)
class ContactRef:
    contact_id: int
    email: str
    forename: str
    surname: str


@dataclass(slots=True)
class Customer:
    """The part of a company an order needs, kept in memory while orders are generated."""

    company_id: int
    company_code: str
    web_user: str
    currency: str
    country: str
    created: str
    contacts: tuple[ContactRef, ...]
    weight: float

    def contact(self, contact_id: int | None) -> ContactRef | None:
        for ref in self.contacts:
            if ref.contact_id == contact_id:
                return ref
        return None

    @classmethod
    def from_doc(cls, doc: dict, weight: float) -> "Customer":
        invoice = next((a for a in doc["addresses"] if a["addr_type"] == "Invoice"), None)
        contacts = tuple(ContactRef(c["contact_id"], c["email"], c["forename"], c["surname"]) for c in doc["contacts"])
        return cls(doc["company_id"], doc["company_code"], doc["web_user"], doc["currency_code"],
                   invoice["country_code"] if invoice else "GB", doc["date_created"], contacts, weight)


@dataclass
class CompanyBuild:
    doc: dict
    customer: Customer
    unsubscribes: list[dict] = field(default_factory=list)  # {company_id, contact_id, email, timestamp, reason}


def ascii_fold(text: str) -> str:
    """``Zoë O'Brien`` -> ``zoe obrien``: what people type into an email address."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch in " -")


def weighted(rng: Random, choices: Sequence[tuple[T, float]]) -> T:
    """One value from ``((value, share), ...)``; the shares add up to 1."""
    roll = rng.random()
    for value, share in choices:
        roll -= share
        if roll < 0:
            return value
    return choices[-1][0]


class CompanyFactory:
    """Builds company documents one at a time; ids come from the shared counters."""

    def __init__(self, rng: Random, seed: int, ids: dict[str, int], start: datetime, clock: datetime):
        self.rng = rng
        self.seed = seed
        self.ids = ids
        self.start = start
        self.clock = clock

    def _next(self, counter: str) -> int:
        value = self.ids[counter]
        self.ids[counter] = value + 1
        return value

    def build(self, created: datetime, role: str | None = None, shared_email: str | None = None) -> CompanyBuild:
        """One company created at ``created``.

        ``role`` plants a fault or forces a consent state (see ``generator.py``);
        ``shared_email`` makes the first contact use an email another contact already has.
        """
        rng = self.rng
        company_id = self._next("company")
        country = weighted(rng, _COUNTRIES)
        currency = "GBP" if country == "GB" else _ABROAD[country][0]
        n_contacts = 0 if role == "no_contacts" else weighted(rng, ((1, 0.82), (2, 0.13), (3, 0.05)))
        if role == "shared_same":
            n_contacts = max(n_contacts, 2)
        mailing_status = self._mailing_status(role)
        contacts = [self._contact(mailing_status) for _ in range(n_contacts)]
        if shared_email is not None and contacts:
            contacts[0]["email"] = shared_email
        if role == "shared_same":
            for contact in contacts[1:]:
                contact["email"] = contacts[0]["email"]
        if role == "bad_email":
            contacts[0]["email"] = self._bad_email(contacts[0])
        if role == "unsub":
            contacts[0]["email_subscribe"] = True
        lead = contacts[0] if contacts else self._person()
        trade = rng.random() < 0.05
        invoice_address = self._address(country, lead["email"] if contacts else "", "Invoice")
        addresses = [invoice_address, self._delivery_address(country, invoice_address)]
        web_user = contacts[0]["email"] if contacts and rng.random() < 0.95 else ""
        created_text = kc(created)
        doc = {
            "company_id": company_id,
            "company_code": "" if role == "missing_code" else f"C{company_id:06d}",
            "company_name": self._company_name(lead, invoice_address["town"], trade),
            "company_class": "Trade" if trade else "Retail",
            "company_status": "Active" if rng.random() < 0.97 else "Closed",
            "web_user": web_user,
            "mailing_status": mailing_status,
            "currency_code": currency,
            "date_created": created_text,
            "updated": self._updated(created),
            "additional": {"LOYALTY_TIER": rng.choice(("Bronze", "Bronze", "Silver", "Gold")),
                           "SOURCE": rng.choice(("Web", "Web", "Web", "Phone", "Store"))},
            "addresses": addresses,
            "contacts": contacts,
        }
        malformed = role in MALFORMED_COMPANY_ROLES
        weight = 0.0 if malformed else popularity(self.seed, "customer", company_id)
        customer = Customer.from_doc(doc, weight)
        build = CompanyBuild(doc, customer)
        # Planted records stay out of the Ometria-unsubscribe fault so each fault is seen alone.
        if role in (None, "unsub"):
            build.unsubscribes = self._unsubscribes(doc, created, force=role == "unsub")
        return build

    # -- people ------------------------------------------------------------------------
    def _person(self) -> dict:
        rng = self.rng
        female = rng.random() < 0.6
        forename = rng.choice(_FEMALE if female else _MALE)
        titles = ("Ms", "Mrs", "Miss", "Dr") if female else ("Mr", "Mr", "Mr", "Dr")
        title = rng.choice(titles) if rng.random() < 0.9 else "Mx"
        return {"title": title, "forename": forename, "surname": rng.choice(_SURNAMES), "email": ""}

    def _contact(self, mailing_status: int | None) -> dict:
        rng = self.rng
        person = self._person()
        contact_id = self._next("contact")
        first = ascii_fold(person["forename"]).replace(" ", "")
        last = ascii_fold(person["surname"]).replace(" ", "")
        # The contact id in the local part keeps every generated email unique unless planted.
        local = rng.choice((f"{first}.{last}{contact_id}", f"{first[0]}{last}{contact_id}",
                            f"{last}.{first}{contact_id}"))
        dob = None
        if rng.random() < 0.6:
            dob = f"{rng.randint(1945, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        return {
            "contact_id": contact_id, "title": person["title"], "forename": person["forename"],
            "surname": person["surname"], "email": f"{local}@{rng.choice(_DOMAINS)}",
            "mobile": f"+447700900{rng.randrange(1000):03d}" if rng.random() < 0.7 else "",
            "dob": dob, "email_subscribe": self._email_subscribe(mailing_status),
            "mailing_flag": mailing_status in (1, 2, 3) and rng.random() < 0.9,
            "inactive": rng.random() < 0.02,
        }

    def _bad_email(self, contact: dict) -> str:
        first = ascii_fold(contact["forename"]).replace(" ", "")
        last = ascii_fold(contact["surname"]).replace(" ", "")
        pattern = self.rng.choice(BAD_EMAILS)
        return pattern.format(local=f"{first}.{last}", first=first, last=last)

    def _company_name(self, lead: dict, town: str, trade: bool) -> str:
        if not trade:
            return f"{lead['forename']} {lead['surname']}"
        return self.rng.choice((f"{lead['surname']} & Sons Ltd", f"{town} Boutique Ltd",
                                f"The {lead['surname']} Partnership"))

    # -- consent -----------------------------------------------------------------------
    def _mailing_status(self, role: str | None) -> int | None:
        if role == "opted_out":
            return DO_NOT_MAIL
        if role == "blank":
            return None
        if role == "unsub":
            return 1
        shares: tuple[tuple[int | None, float], ...] = ((1, 0.35), (2, 0.15), (3, 0.25), (6, 0.10), (7, 0.01),
                                                             (8, 0.01), (None, 0.13))
        return weighted(self.rng, shares)

    def _email_subscribe(self, mailing_status: int | None) -> bool | None:
        rng = self.rng
        if mailing_status in OPT_OUT_STATUSES:
            return False if rng.random() < 0.9 else None
        if mailing_status is None:
            return weighted(rng, ((None, 0.6), (True, 0.2), (False, 0.2)))
        return weighted(rng, ((True, 0.8), (False, 0.1), (None, 0.1)))

    def _unsubscribes(self, doc: dict, created: datetime, force: bool) -> list[dict]:
        """Contacts opted in on KC who have since unsubscribed in Ometria (KC never heard)."""
        if doc["mailing_status"] not in (1, 2, 3):
            return []
        found: list[dict] = []
        for contact in doc["contacts"]:
            if contact["email_subscribe"] is not True:
                continue
            if not (force and not found) and self.rng.random() >= 0.01:
                continue
            when = between(self.rng, max(created, self.start), self.clock)
            found.append({"company_id": doc["company_id"], "contact_id": contact["contact_id"],
                          "email": contact["email"], "timestamp": utc_z(kc(when)),
                          "reason": self.rng.choice(_UNSUBSCRIBE_REASONS)})
        return found

    # -- addresses ---------------------------------------------------------------------
    def _address(self, country: str, email: str, addr_type: str) -> dict:
        rng = self.rng
        number = rng.randint(1, 180)
        if country == "GB":
            town, county, district, area = rng.choice(_GB_TOWNS)
            addr1 = f"{number} {rng.choice(_GB_STREETS)}"
            letters = _POSTCODE_LETTERS
            postcode = f"{district} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
            tel = f"{area} {rng.randrange(100000, 999999)}"
        else:
            _, places, streets, number_first = _ABROAD[country]
            town, county, prefix = rng.choice(places)
            street = rng.choice(streets)
            addr1 = f"{number} {street}" if number_first else f"{street} {number}"
            postcode = self._foreign_postcode(country, prefix)
            tel = f"+{ {'IE': 353, 'FR': 33, 'DE': 49, 'US': 1}[country] } {rng.randrange(10**8, 10**9)}"
        return {
            "address_id": self._next("address"), "addr1": addr1,
            "addr2": f"Flat {rng.randint(1, 12)}" if rng.random() < 0.15 else "", "addr3": "",
            "town": town, "county": county, "postcode": postcode, "country_code": country,
            "email": email, "tel": tel, "addr_type": addr_type, "inactive": False,
        }

    def _foreign_postcode(self, country: str, prefix: str) -> str:
        rng = self.rng
        if country == "IE":
            letters = _POSTCODE_LETTERS
            return f"{prefix} {rng.choice(letters)}{rng.randint(0, 9)}{rng.choice(letters)}{rng.randint(0, 9)}"
        digits = 5 - len(prefix)
        return f"{prefix}{rng.randrange(10 ** digits):0{digits}d}"

    def _delivery_address(self, country: str, invoice: dict) -> dict:
        # Most people deliver where they are billed; some send to work or family.
        if self.rng.random() < 0.8:
            same = dict(invoice, address_id=self._next("address"), addr_type="Delivery")
            return same
        return self._address(country, invoice["email"], "Delivery")

    def _updated(self, created: datetime) -> str:
        # A quarter of customers changed something (address, phone) after they were created.
        if created < self.clock and self.rng.random() < 0.25:
            return kc(between(self.rng, max(created, self.start), self.clock))
        return kc(created)


class CustomerPool:
    """Customers in creation order, drawn by popularity among those who exist at a given time."""

    def __init__(self, customers: list[Customer]):
        self.customers = sorted(customers, key=lambda c: (c.created, c.company_id))
        self._created = [c.created for c in self.customers]
        self._cumulative: list[float] = []
        running = 0.0
        for customer in self.customers:
            running += customer.weight
            self._cumulative.append(running)

    def pick(self, rng: Random, when: str) -> Customer:
        existing = bisect_right(self._created, when)
        if existing == 0 or self._cumulative[existing - 1] <= 0:
            existing = len(self.customers)  # nobody existed yet: the earliest customers will do
        index = bisect_right(self._cumulative, rng.random() * self._cumulative[existing - 1], 0, existing)
        return self.customers[min(index, existing - 1)]
