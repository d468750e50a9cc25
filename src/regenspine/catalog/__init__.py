"""Reference catalogues: versioned clinical reference data (conditions and their codes)."""
