"""Eligibility: the red-flag screening and the rules that decide who may have a cell injection."""
