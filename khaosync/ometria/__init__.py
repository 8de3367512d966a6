"""Ometria: record models, the wire format, the push client and limiter, the read-back client."""
