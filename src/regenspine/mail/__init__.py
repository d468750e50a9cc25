"""Outgoing e-mail: queued in the database with the change it reports, delivered afterwards."""
