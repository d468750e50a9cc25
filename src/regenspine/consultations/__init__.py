"""Consultations: what the doctor found, kept in versions so every change stays visible."""
