"""Products: keyed on the stable stock id, SCS children as variants, attributes, gaps flagged."""

from decimal import Decimal

from khaosync.khaos.models import Scs, StockItem
from khaosync.mapping import Mapping, parse_mapping
from khaosync.mapping.products import map_stock_item, slug

DEFAULT = Mapping()


def style(**over) -> StockItem:
    data = dict(stock_id=300, stock_code="JNS001", description="Orchard Straight Jeans", sell_price=Decimal("55.83"),
                vat_rate=Decimal("20"), manufacturer="Harbour & Co", images=["jns001-1.jpg"],
                user_defined={"CATEGORY": "Bottoms", "SEASON": "AW26", "INTERNAL": "x"})
    data.update(over)
    return StockItem(**data)


def child(**over) -> StockItem:
    data = dict(stock_id=315, stock_code="JNS001-BUR-36-V2", parent_id=300, parent_code="JNS001",
                description="Orchard Straight Jeans, Burgundy, 36", sell_price=Decimal("55.83"),
                vat_rate=Decimal("20"), scs=Scs(style="JNS001", colour="Burgundy", size="36"),
                images=["jns001 bur.jpg"], user_defined={"COLOUR_FAMILY": "Burgundy"})
    data.update(over)
    return StockItem(**data)


def test_a_style_is_a_product_keyed_on_its_stock_id():
    outcome = map_stock_item(style(), 4, DEFAULT)
    assert outcome.findings == [] and outcome.hold is None and outcome.lineage == [("stock_item", "300", 4)]
    assert outcome.record.to_wire() == {
        "@type": "product", "id": "300", "title": "Orchard Straight Jeans", "sku": "JNS001",
        "url": "https://shop.example.co.uk/p/JNS001", "image_url": "https://shop.example.co.uk/images/jns001-1.jpg",
        "price": Decimal("67.00"), "currency": "GBP", "is_active": True, "is_variant": False,
        "attributes": [{"type": "category", "id": "bottoms", "label": "Bottoms"},
                       {"type": "season", "id": "aw26", "label": "AW26"},
                       {"type": "brand", "id": "harbour-co", "label": "Harbour & Co"}],
    }


def test_an_scs_child_is_a_variant_with_its_own_id_and_current_code():
    record = map_stock_item(child(), 2, DEFAULT).record
    assert (record.id, record.is_variant, record.sku) == ("315", True, "JNS001-BUR-36-V2")
    assert record.url == "https://shop.example.co.uk/p/JNS001"  # the style's page
    assert record.image_url == "https://shop.example.co.uk/images/jns001%20bur.jpg"
    assert {(a.type, a.id) for a in record.attributes} == {("colour_family", "burgundy"), ("colour", "burgundy"),
                                                           ("size", "36")}


def test_separate_mode_makes_every_item_a_product():
    record = map_stock_item(child(), 1, parse_mapping("products: {variants: separate}")).record
    assert record.is_variant is False and record.id == "315"


def test_net_prices_listings_and_deleted_items():
    mapping = parse_mapping("products:\n  price: net\n  currency: EUR\n  listings: [{store: ie, currency: EUR}]\n")
    record = map_stock_item(style(deleted=True), 1, mapping).record
    assert (record.price, record.currency, record.is_active) == (Decimal("55.83"), "EUR", False)
    assert record.listings[0].model_dump(exclude_none=True) == {
        "store": "ie", "title": "Orchard Straight Jeans", "price": Decimal("55.83"), "currency": "EUR",
        "is_active": False, "url": "https://shop.example.co.uk/p/JNS001",
        "image_url": "https://shop.example.co.uk/images/jns001-1.jpg"}


def test_what_recommendations_need_is_flagged_not_held():
    for item, missing in ((style(sell_price=Decimal("0.00")), "price above zero"), (style(description=""), "title")):
        outcome = map_stock_item(item, 1, DEFAULT)
        assert outcome.hold is None and outcome.record is not None
        [finding] = outcome.findings
        assert finding.type == "product_mismatch" and missing in finding.reason
        assert finding.records == ("stock_item:300",)
    no_url = parse_mapping("products: {url_template: null}")
    assert "url" in map_stock_item(style(), 1, no_url).findings[0].reason
    assert map_stock_item(child(description=""), 1, DEFAULT).findings == []  # variants are not recommended alone


def test_slug():
    assert slug("Forest Green") == "forest-green" and slug("Harbour & Co") == "harbour-co" and slug("  ") == ""
