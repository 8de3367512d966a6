"""The YAML mapping rules: the file's schema and loader, and one rule module per entity.

- ``schema``: the mapping file (``Mapping``), ``load_mapping``, ``explain``;
- ``contacts``: KC companies/contacts -> Ometria contacts (identity, consent, shared emails);
- ``orders``: KC sales orders + credit notes -> Ometria orders (trigger, status, totals, refunds);
- ``products``: KC stock items -> Ometria products and variants;
- ``outcome``: what a rule returns (a record, why it is held, its findings).

Rules are plain functions over ERP models; ``khaosync.stages.map`` runs them over the store.
"""

from khaosync.mapping.schema import DEFAULT_MAPPING_PATH, Mapping, explain, load_mapping, parse_mapping

__all__ = ["DEFAULT_MAPPING_PATH", "Mapping", "explain", "load_mapping", "parse_mapping"]
