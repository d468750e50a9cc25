"""The file type of an uploaded consent scan is read from its first bytes, never from its name or
the browser's word: any bytes give PDF, PNG, JPEG or nothing, and nothing else gets through
(ASVS 5.0 V5.2.2: the content must be of the accepted type, checked by its magic bytes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenspine.episodes.consent import sniff

# The signatures as the formats define them, written out here rather than read from the module:
# PDF (ISO 32000-1, 7.5.2: the header "%PDF-"), PNG (RFC 2083 / ISO 15948, 3.1: the eight-byte
# signature) and JPEG (ITU T.81: SOI marker FF D8 followed by the next marker's FF).
MAGIC = {
    "application/pdf": b"%PDF-",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
}
FIRST_BYTES = {magic[0] for magic in MAGIC.values()}


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_any_bytes_are_sniffed_as_pdf_png_jpeg_or_nothing_and_never_raise(data):
    sniffed = sniff(data)
    assert sniffed is None or data.startswith(MAGIC[sniffed])


@settings(max_examples=300)
@given(st.sampled_from(sorted(MAGIC)), st.binary(max_size=64))
def test_a_file_that_starts_with_a_real_signature_is_sniffed_as_that_type(content_type, tail):
    assert sniff(MAGIC[content_type] + tail) == content_type


@settings(max_examples=300)
@given(st.sampled_from(sorted(MAGIC)), st.data(), st.binary(max_size=32))
def test_one_changed_byte_in_the_signature_is_not_taken_for_that_type(content_type, data, tail):
    magic = MAGIC[content_type]
    position = data.draw(st.integers(min_value=0, max_value=len(magic) - 1), label="position")
    byte = data.draw(
        st.integers(min_value=0, max_value=255).filter(lambda b: b != magic[position]),
        label="byte",
    )
    changed = magic[:position] + bytes([byte]) + magic[position + 1 :]
    assert sniff(changed + tail) != content_type


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=64).filter(lambda d: d[0] not in FIRST_BYTES))
def test_a_file_whose_first_byte_starts_no_signature_is_refused(data):
    assert sniff(data) is None


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_text_documents_are_never_taken_for_a_scan(text):
    # HTML, SVG, XML, scripts and plain text begin with a character, not with "%PDF-": refused.
    for document in (text, "<" + text, "<?xml " + text, "<svg " + text):
        if not document.startswith("%PDF-"):
            assert sniff(document.encode("utf-8")) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"%PDF",  # cut short
        b"%pdf-1.7",
        b" %PDF-1.7",  # the signature must be first
        b"\xef\xbb\xbf%PDF-1.7",  # a byte-order mark in front
        b"GIF89a\x01\x00",
        b"<!DOCTYPE html><script>alert(1)</script>",
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
        b"MZ\x90\x00",
        b"PK\x03\x04",  # a ZIP or Office document
        b"\x89PNG\r\n",  # the PNG signature cut short
        b"\xff\xd8",  # the JPEG start marker without the next marker
    ],
)
def test_common_files_that_are_not_scans_are_refused(data):
    assert sniff(data) is None


def test_a_pdf_with_html_inside_is_kept_as_a_pdf_never_as_html():
    # A polyglot: it is a PDF to a PDF reader and would be markup to a browser that guessed.
    polyglot = b"%PDF-1.4\n<html><script>window.__xss=1</script></html>\n%%EOF"
    assert sniff(polyglot) == "application/pdf"
