"""Khaos Control: ERP models, the SOAP client, parsers, the file source and discover.

Every assumption about a real installation lives in this package and is listed in
docs/verify-on-site.md.
"""
