"""The mapping file: its schema, the loader's errors, combining files, the shipped default."""

from pathlib import Path

import pytest

from khaosync.errors import ConfigError
from khaosync.findings import owner_of
from khaosync.mapping import Mapping, explain, load_mapping, parse_mapping
from khaosync.mapping.schema import combine, packaged_default_text

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mappings" / "default.yaml"
EXAMPLE = ROOT / "mappings" / "example-site.yaml"


def test_the_packaged_default_is_the_repository_default():
    assert packaged_default_text() == DEFAULT.read_text(encoding="utf-8"), (
        "cp mappings/default.yaml khaosync/mapping/default.yaml")


def test_default_yaml_states_exactly_the_schema_defaults():
    assert load_mapping(str(DEFAULT)).model_dump(exclude={"sources"}) == Mapping().model_dump(exclude={"sources"})


def test_an_empty_file_is_the_defaults():
    assert parse_mapping("", "empty.yaml").model_dump(exclude={"sources"}) == Mapping().model_dump(exclude={"sources"})


def test_example_site_differs_where_it_says():
    site = load_mapping(str(EXAMPLE))
    assert site.consent.mailing_status == {1: "opt_in", 4: "opt_in", 6: "opt_out"}
    assert site.orders.trigger == "released"
    assert site.contacts.shared_email == "skip"
    assert owner_of("product_mismatch", site.owners) == "merchandising"
    assert owner_of("refund_gap", site.owners) == owner_of("refund_gap") == "finance"


def test_missing_default_falls_back_to_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no mappings/ here
    mapping = load_mapping()
    assert mapping.sources == ("khaosync/mapping/default.yaml (packaged default)",)
    with pytest.raises(ConfigError, match="mapping file mappings/site.yaml not found"):
        load_mapping(["mappings/site.yaml"])


@pytest.mark.parametrize("text,where,reason", [
    ("consent:\n  mailing_status:\n    6: maybe\n", "consent.mailing_status.6",
     "expected 'opt_in', 'opt_out' or 'no_decision', got 'maybe'"),
    ("orders:\n  trigger: shipped\n", "orders.trigger", "expected 'placed', 'released' or 'despatched', got 'shipped'"),
    ("orders:\n  tirgger: placed\n", "orders.tirgger", "unknown key"),
    ("identity:\n  customer_id: email\n", "identity.customer_id", "got 'email'"),
    ("identity:\n  contact_id: company_code\n", "identity.contact_id", "expected 'contact_id'"),
    ("products:\n  id: stock_code\n", "products.id", "expected 'stock_id'"),
    ("orders:\n  invoice_stages:\n    held: [16]\n", "orders.invoice_stages", "stage 16 is in both held and despatched"),
    ("products:\n  url_template: 'https://x.example/{code}'\n", "products.url_template", "unknown placeholder {code}"),
    ("products:\n  url_template: '/p/{stock_id}'\n", "products.url_template", "absolute http(s) URL"),
    ("products:\n  currency: XYZ\n", "products.currency", "not an ISO 4217 currency"),
    ("owners:\n  total_mismatchh: finance\n", "owners", "unknown exception type 'total_mismatchh'"),
    ("contacts:\n  phone_country_code: '+44'\n", "contacts.phone_country_code", "calling code"),
    ("version: 2\n", "version", "expected 1"),
])
def test_bad_files_name_file_key_and_reason(text, where, reason):
    with pytest.raises(ConfigError) as caught:
        parse_mapping(text, "site.yaml")
    message = str(caught.value)
    assert message.startswith("site.yaml: invalid mapping")
    line = next(line for line in message.splitlines() if line.strip().startswith(where + ":"))
    assert reason in line, message


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("consent:\n  mailing_status: [1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line 3"):
        load_mapping([str(path)])
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_mapping([str(path)])


def test_later_files_replace_keys_whole(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("consent:\n  mailing_status: {6: opt_out}\norders:\n  trigger: placed\nowners: {consent_gap: dpo}\n")
    mapping = load_mapping([str(DEFAULT), str(site)])
    assert mapping.consent.mailing_status == {6: "opt_out"}  # replaced, not merged with 1/2/3/5
    assert mapping.consent.email_subscribe_true == "opt_in"  # other keys of the section stay
    assert mapping.orders.trigger == "placed" and mapping.orders.statuses.despatched == "shipped"
    assert mapping.owners == {"consent_gap": "dpo"}
    assert mapping.sources == (str(DEFAULT), str(site))
    assert combine([{"a": {"x": 1, "y": 2}}, {"a": {"y": 3}, "b": 1}]) == {"a": {"x": 1, "y": 3}, "b": 1}


def test_an_error_in_the_second_file_names_that_file(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("orders:\n  trigger: never\n")
    with pytest.raises(ConfigError, match="site.yaml: invalid mapping"):
        load_mapping([str(DEFAULT), str(site)])


def test_explain_says_what_the_file_does():
    words = explain(load_mapping(str(EXAMPLE)))
    assert "MAILING_STATUS 6 -> opted out" in words["consent"]
    assert any("once an invoice is released" in s for s in words["orders"])
    assert any("all are sent without it" in s or "every contact sharing it is sent without the email" in s
               for s in words["contacts"])
    assert "product_mismatch: merchandising" in words["owners"]
    assert any("@force_optin is never sent" == s for s in words["consent"])
