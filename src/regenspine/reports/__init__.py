"""Printable documents (letters, signed forms) rendered to PDF from the same templates engine."""
