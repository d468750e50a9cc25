"""Tamper-evident audit log: every access to patient data and every security event, hash-chained."""
