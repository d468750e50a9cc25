"""Consent: the versioned documents a patient reads and signs before treatment."""

from regenspine.consent.documents import (
    REQUIRED_RISK_IDS,
    ConsentDocument,
    ConsentDocumentError,
    Declaration,
    Frequency,
    RenderedConsent,
    Risk,
    Section,
    UnknownConsentDocument,
    available_documents,
    current_document,
    load_document,
)

__all__ = [
    "REQUIRED_RISK_IDS",
    "ConsentDocument",
    "ConsentDocumentError",
    "Declaration",
    "Frequency",
    "RenderedConsent",
    "Risk",
    "Section",
    "UnknownConsentDocument",
    "available_documents",
    "current_document",
    "load_document",
]
