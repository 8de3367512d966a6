"""The sandbox merchant's catalogue: styles with colour/size children (KC's SCS), plain items.

A style parent carries the description, price and images a product page needs; its children
are the sellable SKUs (``parent_stock_id``/``parent_code`` and ``scs`` set). Plain items have
no parent and no children. ``sell_price`` is the ex-VAT list price, the ``price_net`` an order
line starts from; VAT is 20% throughout.

Two planted faults live here: ``product_incomplete`` (a parent with ``sell_price`` "0.00" or an
empty ``stock_desc``) and ``renamed_stock_code`` (a SKU whose code changed part-way through the
range; the stock item keeps its id and records the old code in ``code_history``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import accumulate
from random import Random
from typing import Iterable

from khaosync.sandbox.generator_calendar import between, kc

PENNY = Decimal("0.01")
VAT_MULTIPLIER = Decimal("1.2")
VAT_RATE = "20"
FIRST_STOCK_ID = 300
RENAME_SUFFIX = "-V2"  # the supplier re-coded the line; the SKU itself did not change


def pennies(value: Decimal) -> Decimal:
    return value.quantize(PENNY, rounding=ROUND_HALF_UP)


def gross_of(net: Decimal) -> Decimal:
    """UK VAT at 20%, rounded to the penny the way the ERP stores a unit price."""
    return pennies(net * VAT_MULTIPLIER)


def popularity(seed: int, kind: str, key: int, alpha: float = 1.3, cap: float = 40.0) -> float:
    """A stable Pareto weight for one record (a customer, a SKU): the same in generate and advance.

    Derived from a digest of ``(seed, kind, key)`` rather than the generator's random stream so
    that ``advance`` can recover every record's weight without storing it.
    """
    digest = hashlib.blake2b(f"{seed}:{kind}:{key}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 1) / 2.0**64
    return min(cap, uniform ** (-1.0 / alpha))


# (category, code prefix, product name, typical gross price in GBP, size run)
_STYLES = (
    ("Tops", "TEE", "Organic Cotton Tee", 22, "apparel"),
    ("Tops", "LST", "Long Sleeve Tee", 28, "apparel"),
    ("Tops", "SHR", "Oxford Shirt", 55, "apparel"),
    ("Knitwear", "JMP", "Merino Jumper", 79, "apparel"),
    ("Knitwear", "CRD", "Lambswool Cardigan", 89, "apparel"),
    ("Outerwear", "JKT", "Waxed Jacket", 149, "apparel"),
    ("Outerwear", "PRK", "Quilted Parka", 189, "apparel"),
    ("Dresses", "DRS", "Linen Midi Dress", 69, "apparel"),
    ("Bottoms", "JNS", "Straight Jeans", 65, "waist"),
    ("Bottoms", "CHN", "Stretch Chinos", 55, "waist"),
    ("Footwear", "TRN", "Canvas Trainers", 59, "shoe"),
    ("Footwear", "BOT", "Chelsea Boots", 120, "shoe"),
    ("Nightwear", "PJS", "Brushed Cotton Pyjamas", 45, "apparel"),
    ("Accessories", "SCF", "Wool Scarf", 35, "one"),
    ("Accessories", "BNE", "Ribbed Beanie", 22, "one"),
)
_PLAIN = (
    ("Home", "MUG", "Stoneware Mug", 14),
    ("Home", "CND", "Scented Candle", 24),
    ("Accessories", "TOT", "Canvas Tote Bag", 18),
    ("Gifts", "GFB", "Gift Box", 6),
    ("Home", "THR", "Wool Throw", 85),
    ("Stationery", "NTB", "Linen Notebook", 12),
    ("Accessories", "UMB", "Compact Umbrella", 25),
)
_SIZES = {
    "apparel": (("XS", 0.5), ("S", 1.0), ("M", 1.4), ("L", 1.3), ("XL", 0.8)),
    "waist": (("28", 0.6), ("30", 1.0), ("32", 1.3), ("34", 1.1), ("36", 0.7)),
    "shoe": (("5", 0.5), ("6", 0.8), ("7", 1.0), ("8", 1.2), ("9", 1.2), ("10", 1.0), ("11", 0.6)),
    "one": (("One Size", 1.0),),
}
_COLOURS = (
    ("Black", "BLK"), ("Navy", "NVY"), ("White", "WHT"), ("Grey Marl", "GRM"), ("Oatmeal", "OAT"),
    ("Forest Green", "FGR"), ("Rust", "RST"), ("Cornflower Blue", "CBL"), ("Burgundy", "BUR"),
    ("Ochre", "OCH"), ("Blush Pink", "PNK"),
)
_STYLE_NAMES = ("Harbour", "Fell", "Cove", "Moor", "Orchard", "Heath", "Coast", "Dale", "Meadow", "Ridge",
                "Tarn", "Beck", "Holm", "Combe", "Strand", "Brook", "Glen", "Wold", "Marsh", "Loch")
_MANUFACTURERS = ("Northfield Mills", "Harbour & Co", "Atelier Rousseau", "Kettlewell Knitwear",
                  "Pennine Leather", "Tamar Textiles", "Söderberg Design")
_SEASONS = ("CORE", "CORE", "AW25", "SS26", "AW26")


@dataclass(slots=True)
class Sellable:
    """What an order line needs to know about a SKU (never a style parent)."""

    stock_id: int
    code: str  # the code orders used before any rename
    desc: str
    net_gbp: Decimal
    renamed_at: str | None = None  # KC local time the code changed, if it did
    new_code: str | None = None

    def code_at(self, when: str) -> str:
        """The stock code an order placed (or a credit note issued) at ``when`` carries."""
        if self.renamed_at is not None and when >= self.renamed_at:
            return self.new_code  # type: ignore[return-value]
        return self.code


class Catalogue:
    """The SKUs customers can order, with a popularity-weighted draw."""

    def __init__(self, sellables: list[Sellable], weights: list[float]):
        self.sellables = sellables
        self.by_id = {s.stock_id: s for s in sellables}
        self._cumulative = list(accumulate(weights))

    def pick(self, rng: Random) -> Sellable:
        index = bisect_right(self._cumulative, rng.random() * self._cumulative[-1])
        return self.sellables[min(index, len(self.sellables) - 1)]

    @classmethod
    def from_stock_docs(cls, seed: int, docs: list[dict]) -> "Catalogue":
        """The sellable SKUs of a list of stock documents, with their stable weights."""
        parents = style_parent_ids(docs)
        sellables, weights = [], []
        for doc in docs:
            if doc["deleted"] or doc["stock_id"] in parents:
                continue
            sellables.append(Sellable(doc["stock_id"], doc["stock_code"], doc["stock_desc"],
                                      Decimal(doc["sell_price"])))
            weights.append(popularity(seed, "stock", doc["stock_id"]))
        return cls(sellables, weights)


def style_parent_ids(docs: Iterable[dict]) -> set[int]:
    """A style parent is a stock item some other item names as its parent."""
    return {doc["parent_stock_id"] for doc in docs if doc["parent_stock_id"] is not None}


def _ean13(sequence: int) -> str:
    body = f"501234{sequence:06d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _list_price(rng: Random, typical: int) -> Decimal:
    """An ex-VAT price whose VAT-inclusive price lands near a shop price like 23.99."""
    target = Decimal(max(3, round(typical * rng.uniform(0.8, 1.3)))) - PENNY
    return pennies(target / VAT_MULTIPLIER)


@dataclass
class CatalogueBuild:
    docs: list[dict]  # every stock_item document, in stock_id order, in its final state
    catalogue: Catalogue
    product_incomplete: list[dict]
    renamed: list[Sellable]


class CatalogueFactory:
    """Builds the stock_item documents and the sellable view of them."""

    def __init__(self, rng: Random, seed: int, start: datetime, clock: datetime):
        self.rng = rng
        self.seed = seed
        self.start = start
        self.clock = clock
        self.next_stock_id = FIRST_STOCK_ID
        self.next_barcode = 1
        self.prefix_counts: dict[str, int] = {}

    def build(self, styles: int, plain_items: int, renames_from: datetime, renames_to: datetime) -> CatalogueBuild:
        docs: list[dict] = []
        parent_docs: list[dict] = []
        for _ in range(styles):
            parent, children = self._style()
            parent_docs.append(parent)
            docs.append(parent)
            docs.extend(children)
        for _ in range(plain_items):
            docs.append(self._plain())
        incomplete = self._plant_incomplete(parent_docs)
        spoiled = {entry["stock_id"] for entry in incomplete}
        catalogue = Catalogue.from_stock_docs(self.seed, docs)
        renamed = self._plant_renames(docs, catalogue, spoiled, renames_from, renames_to)
        return CatalogueBuild(docs, catalogue, incomplete, renamed)

    # -- documents ---------------------------------------------------------------------
    def _created_and_updated(self) -> tuple[str, str]:
        created = between(self.rng, self.start - timedelta(days=730), self.start - timedelta(days=1))
        # About a third of the catalogue was edited (price, copy, images) during the range.
        updated = between(self.rng, self.start, self.clock) if self.rng.random() < 0.3 else created
        return kc(created), kc(updated)

    def _code(self, prefix: str) -> str:
        n = self.prefix_counts.get(prefix, 0) + 1
        self.prefix_counts[prefix] = n
        return f"{prefix}{n:03d}"

    def _base_doc(self, code: str, desc: str, price: Decimal, category: str) -> dict:
        rng = self.rng
        stock_id = self.next_stock_id
        self.next_stock_id += 1
        _, updated = self._created_and_updated()
        return {
            "stock_id": stock_id, "stock_code": code, "parent_stock_id": None, "parent_code": None,
            "stock_desc": desc, "long_desc": f"{desc}. Designed in Britain, made to last.",
            "web_teaser": f"Our {desc.lower()}", "sell_price": str(price), "vat_rate": VAT_RATE,
            "deleted": False, "stock_type": 1, "manufacturer": rng.choice(_MANUFACTURERS),
            "other_ref": f"SUP-{rng.randrange(10000, 99999)}", "barcodes": [],
            "user_defined": {"CATEGORY": category, "SEASON": rng.choice(_SEASONS)},
            "images": [], "scs": None, "code_history": [], "updated": updated,
        }

    def _barcodes(self) -> list[str]:
        codes = [_ean13(self.next_barcode)]
        self.next_barcode += 1
        if self.rng.random() < 0.05:  # a supplier barcode as well as our own
            codes.append(_ean13(self.next_barcode))
            self.next_barcode += 1
        return codes

    def _style(self) -> tuple[dict, list[dict]]:
        rng = self.rng
        category, prefix, product, typical, size_run = rng.choice(_STYLES)
        code = self._code(prefix)
        desc = f"{rng.choice(_STYLE_NAMES)} {product}"
        price = _list_price(rng, typical)
        parent = self._base_doc(code, desc, price, category)
        parent["images"] = [f"{code.lower()}-1.jpg", f"{code.lower()}-2.jpg"]
        colours = rng.sample(_COLOURS, rng.randint(1, 4))
        children = []
        for colour, colour_code in colours:
            for size, _ in _SIZES[size_run]:
                size_code = size.replace(" ", "").upper()[:4]
                child = self._base_doc(f"{code}-{colour_code}-{size_code}", f"{desc}, {colour}, {size}", price,
                                       category)
                child.update(parent_stock_id=parent["stock_id"], parent_code=code,
                             scs={"style": code, "colour": colour, "size": size},
                             barcodes=self._barcodes(), images=[f"{code.lower()}-{colour_code.lower()}.jpg"])
                child["user_defined"].update(COLOUR_FAMILY=colour.split()[-1], SEASON=parent["user_defined"]["SEASON"])
                child["deleted"] = rng.random() < 0.02  # a discontinued colourway
                children.append(child)
        return parent, children

    def _plain(self) -> dict:
        rng = self.rng
        category, prefix, product, typical = rng.choice(_PLAIN)
        code = self._code(prefix)
        doc = self._base_doc(code, f"{rng.choice(_STYLE_NAMES)} {product}", _list_price(rng, typical), category)
        doc["barcodes"] = self._barcodes()
        doc["images"] = [f"{code.lower()}.jpg"]
        return doc

    # -- planted faults ----------------------------------------------------------------
    def _plant_incomplete(self, parents: list[dict]) -> list[dict]:
        """Parents a product feed cannot use: no price, or no title (at least one of each)."""
        count = min(len(parents), max(2, round(len(parents) * 0.02)))
        chosen = sorted(self.rng.sample(range(len(parents)), count))
        planted = []
        for n, index in enumerate(chosen):
            doc = parents[index]
            if n % 2 == 0:
                doc["sell_price"] = "0.00"
                planted.append({"stock_id": doc["stock_id"], "field": "sell_price"})
            else:
                doc["stock_desc"] = ""
                planted.append({"stock_id": doc["stock_id"], "field": "stock_desc"})
        return planted

    def _plant_renames(self, docs: list[dict], catalogue: Catalogue, spoiled_parents: set[int],
                       renames_from: datetime, renames_to: datetime) -> list[Sellable]:
        by_id = {doc["stock_id"]: doc for doc in docs}
        eligible = [s for s in catalogue.sellables if by_id[s.stock_id]["parent_stock_id"] not in spoiled_parents]
        count = min(len(eligible), max(1, round(len(catalogue.sellables) * 0.01)))
        # The most popular SKUs first: a rename matters most where there are orders to point at it.
        eligible.sort(key=lambda s: (-popularity(self.seed, "stock", s.stock_id), s.stock_id))
        pool = eligible[: max(count * 4, count)]
        renamed = sorted(self.rng.sample(pool, count), key=lambda s: s.stock_id)
        for sellable in renamed:
            when = kc(between(self.rng, renames_from, renames_to))
            rename(by_id[sellable.stock_id], sellable, when)
        return renamed


def rename(doc: dict, sellable: Sellable, when: str) -> None:
    """Give a SKU a new code at ``when``: the document and the order-line view both learn it."""
    new_code = sellable.code + RENAME_SUFFIX
    sellable.renamed_at = when
    sellable.new_code = new_code
    doc["code_history"] = doc["code_history"] + [doc["stock_code"]]
    doc["stock_code"] = new_code
    doc["updated"] = max(doc["updated"], when)
