"""Shared web layer: the request boundary, identity, CSRF, problem responses, layout templates."""
