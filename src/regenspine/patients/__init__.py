"""Patients: registration, identity (PESEL, documents), search, and corrections by amendment."""
