"""Patients' data rights: a complete access export, and erasure within the law's retention rules."""
