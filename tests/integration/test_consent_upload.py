"""Scanned consent forms through the real consent form, on both databases: a hostile file name
leaves nothing on disk and is not kept; the size limit is exact; the stored type is the sniffed
one, whatever the name or the browser says."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from regenspine.audit.models import AuditRecord
from regenspine.auth.permissions import Role
from regenspine.episodes.consent import MAX_SCAN_BYTES
from regenspine.episodes.models import Consent
from tests.integration.test_pathway import assess, episode  # noqa: F401  (fixture)

FORM = {"method": "scanned_form", "signed_name": "", "confirmed": "yes", "language": "pl"}
PDF = b"%PDF-1.7\n%signed consent form\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


BOUNDARY = b"----regenspine-test-7MA4YWxkTrZu0gW"


def multipart(fields: dict[str, str], filename: bytes, content: bytes, content_type: str):
    """A multipart body built by hand, so the file name reaches the server byte for byte (HTTP
    clients percent-encode NUL and quotes; an attacker's client does not)."""
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (BOUNDARY, key.encode(), value.encode())
        for key, value in fields.items()
    ]
    parts.append(
        b'--%s\r\nContent-Disposition: form-data; name="scan"; filename="%s"\r\n'
        b"Content-Type: %s\r\n\r\n%s\r\n" % (BOUNDARY, filename, content_type.encode(), content)
    )
    parts.append(b"--%s--\r\n" % BOUNDARY)
    return b"".join(parts), f"multipart/form-data; boundary={BOUNDARY.decode()}"


def upload(clients, episode_id, filename, content, content_type="application/pdf"):
    raw_name = filename if isinstance(filename, bytes) else filename.encode()
    body, media_type = multipart(FORM, raw_name, content, content_type)
    return clients(Role.COORDINATOR).post(
        f"/episodes/{episode_id}/consent",
        content=body,
        headers={"content-type": media_type},
        follow_redirects=False,
    )


def stored_consents(factory) -> list[Consent]:
    with factory() as s:
        consents = list(s.scalars(select(Consent)))
        for c in consents:
            _ = c.scan_data  # deferred column: load it while the session is open
        return consents


def every_stored_text(factory) -> str:
    """Every value of every consent and audit row, as one string to search."""
    with factory() as s:
        rows = [*s.scalars(select(Consent)), *s.scalars(select(AuditRecord))]
        return "\n".join(
            repr(getattr(row, column.key)) for row in rows for column in row.__table__.columns
        )


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if not p.is_dir()]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The server runs in a deep working directory with its own temporary directory, so any file
    written from a client's file name or spooled from the upload would show up in here."""
    cwd = tmp_path / "srv" / "app" / "run"
    spool = tmp_path / "spool"
    cwd.mkdir(parents=True)
    spool.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return tmp_path


HOSTILE_NAMES = [
    "../../etc/passwd.pdf",
    "..\\..\\..\\windows\\system32\\consent.pdf",
    "/etc/cron.d/consent.pdf",
    b"consent\x00.pdf.sh",
    b"\xff\xfe../consent.pdf",  # not UTF-8
    "../" * 40 + "x" * 4000 + ".pdf",
]


def test_a_hostile_file_name_writes_nothing_to_disk_and_is_not_kept(
    clients,
    episode,  # noqa: F811
    factory,
    sandbox,
):
    """ASVS 5.0 V5.3.1, V5.3.2 (a user-submitted file name is never used to build a path; the
    file is stored in the database, not the file system), V5.2.2."""
    assess(clients, episode)
    for number, filename in enumerate(HOSTILE_NAMES):
        # Over the 1 MB the form parser keeps in memory, so it is spooled while parsed.
        content = PDF + b"%d" % number + b"0" * (2 * 1024 * 1024)
        response = upload(clients, episode, filename, content)
        assert response.status_code == 303, (filename, response.text[:500])
        assert files_under(sandbox) == [], filename
        assert not (sandbox / "srv" / "etc" / "passwd.pdf").exists()
        latest = max(stored_consents(factory), key=lambda c: c.id)
        assert latest.scan_data == content and latest.scan_content_type == "application/pdf"
        kept = every_stored_text(factory)
        for fragment in ("passwd", "etc/", "..", "system32", "cron.d", "xxxxxxxx", ".sh"):
            assert fragment not in kept, (filename, fragment)
        # Withdrawn, so that the next name is tried on a fresh consent of the same episode.
        withdrawn = clients(Role.COORDINATOR).post(
            f"/episodes/{episode}/consent/withdraw",
            data={"reason": "Scanned the wrong page"},
            follow_redirects=False,
        )
        assert withdrawn.status_code == 303, withdrawn.text[:500]
    assert len(stored_consents(factory)) == len(HOSTILE_NAMES)


@pytest.mark.parametrize(
    ("filename", "status"),
    [
        (b"../" * 40 + b"x" * 100_000 + b".pdf", 400),  # beyond what the form parser reads
        # A line break in the name smuggles a header: the part now claims to be HTML.
        (b"consent.pdf\r\nContent-Type: text/html", 422),
    ],
    ids=["100-kb-name", "header-injection"],
)
def test_a_malformed_upload_is_refused_and_stores_nothing(
    clients,
    episode,  # noqa: F811
    factory,
    sandbox,
    filename,
    status,
):
    """ASVS 5.0 V5.3.2, V2.2.1: a name the form parser cannot accept, or one that smuggles a
    header, is refused as a client error (never a 500) and nothing is stored."""
    assess(clients, episode)
    response = upload(clients, episode, filename, PDF)
    assert response.status_code == status, response.text[:500]
    assert "Traceback" not in response.text
    if status == 422:
        assert "The file is not a PDF, PNG or JPEG document." in response.text
    assert stored_consents(factory) == []
    assert files_under(sandbox) == []


def test_a_scan_one_byte_over_the_limit_is_refused_with_the_limit_and_stores_nothing(
    clients,
    episode,  # noqa: F811
    factory,
    sandbox,
):
    """ASVS 5.0 V5.2.1 (files larger than the allowed size are refused)."""
    assess(clients, episode)
    too_big = PDF + b"0" * (MAX_SCAN_BYTES + 1 - len(PDF))
    refused = upload(clients, episode, "consent.pdf", too_big)
    assert refused.status_code == 422
    assert "The file is larger than 5 MB." in refused.text
    assert stored_consents(factory) == []
    assert files_under(sandbox) == []
    at_limit = PDF + b"0" * (MAX_SCAN_BYTES - len(PDF))
    accepted = upload(clients, episode, "consent.pdf", at_limit)
    assert accepted.status_code == 303, accepted.text[:500]
    [consent] = stored_consents(factory)
    assert len(consent.scan_data) == MAX_SCAN_BYTES


def test_a_request_far_over_the_limit_is_refused_before_it_is_read(
    clients,
    episode,  # noqa: F811
    factory,
    sandbox,
):
    """ASVS 5.0 V5.2.1: an upload far over the limit is refused from its declared size, or
    while it streams in when no size is declared, so it never fills a temporary file; the
    refusal says what to do and carries the security headers."""
    assess(clients, episode)
    huge = PDF + b"0" * (8 * 1024 * 1024)
    declared = upload(clients, episode, "consent.pdf", huge)
    assert declared.status_code == 413
    assert "A scanned document may be at most 5 MB" in declared.text
    assert "Content-Security-Policy" in declared.headers
    body, media_type = multipart(FORM, b"consent.pdf", huge, "application/pdf")

    def chunks():
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    streamed = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent",
        content=chunks(),
        headers={"content-type": media_type},
        follow_redirects=False,
    )
    assert streamed.status_code == 413
    assert stored_consents(factory) == []
    assert files_under(sandbox) == []


def test_an_oversized_api_request_is_refused_as_problem_json_and_stores_nothing(clients, factory):
    """ASVS 5.0 V5.2.1 / V4.x: no JSON body comes near 1 MiB; a bigger one is refused."""
    from regenspine.patients.models import Patient
    from tests.conftest import valid_patient

    body = valid_patient() | {"address": "x" * (2 * 1024 * 1024)}
    response = clients(Role.COORDINATOR).post("/api/v1/patients", json=body)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 413
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Patient)) == 0


NOT_SCANS = [
    ("consent.pdf", PNG, "application/pdf"),  # a PNG renamed to .pdf
    ("consent.pdf", b"<!DOCTYPE html><script>window.__xss=1</script>", "application/pdf"),
    ("consent.pdf", b"<!DOCTYPE html><script>window.__xss=1</script>", "text/html"),
    ("consent.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="x()"/>', "image/svg+xml"),
    ("consent.pdf", b"GIF89a\x01\x00\x01\x00", "image/gif"),
    ("consent.pdf", b"PK\x03\x04 an office document", "application/pdf"),
    ("consent.pdf", b"\xef\xbb\xbf%PDF-1.7 after a byte-order mark", "application/pdf"),
]


def test_a_file_that_is_not_what_it_claims_or_not_a_scan_is_refused(
    clients,
    episode,  # noqa: F811
    factory,
):
    """ASVS 5.0 V5.2.2 (the content must match the expected type, checked by its magic bytes)."""
    assess(clients, episode)
    for filename, content, declared in NOT_SCANS:
        refused = upload(clients, episode, filename, content, declared)
        assert refused.status_code == 422, (content, refused.text[:500])
        assert "The file is not a PDF, PNG or JPEG document." in refused.text, content
    assert stored_consents(factory) == []
    with factory() as s:
        recorded = s.scalar(
            select(func.count(AuditRecord.id)).where(AuditRecord.action == "consent.record")
        )
    assert recorded == 0


def test_a_png_named_pdf_is_stored_as_a_png_and_a_pdf_with_markup_inside_as_a_pdf(
    clients,
    episode,  # noqa: F811
    factory,
):
    """ASVS 5.0 V5.2.2: what is stored carries the sniffed type, never the name's."""
    assess(clients, episode)
    stored = upload(clients, episode, "consent.pdf", PNG, "image/png")
    assert stored.status_code == 303, stored.text[:500]
    [consent] = stored_consents(factory)
    assert consent.scan_content_type == "image/png"

    # The same for a PDF/HTML polyglot: kept only as application/pdf, which no page renders.
    withdraw = clients(Role.COORDINATOR).post(
        f"/episodes/{episode}/consent/withdraw",
        data={"reason": "Form scanned at the wrong page"},
        follow_redirects=False,
    )
    assert withdraw.status_code == 303, withdraw.text[:500]
    polyglot = b"%PDF-1.4\n<html><script>window.__xss=1</script></html>\n%%EOF"
    again = upload(clients, episode, "consent.html", polyglot, "application/pdf")
    assert again.status_code == 303, again.text[:500]
    latest = max(stored_consents(factory), key=lambda c: c.id)
    assert latest.scan_content_type == "application/pdf" and latest.scan_data == polyglot


def test_a_real_scan_the_browser_could_not_type_is_accepted_as_what_it_is(
    clients,
    episode,  # noqa: F811
    factory,
):
    """A browser that does not know a file's type sends application/octet-stream: that claims
    nothing, so a real PDF is accepted and stored as a PDF; HTML sent the same way is not."""
    assess(clients, episode)
    refused = upload(
        clients, episode, "scan", b"<html>not a scan</html>", "application/octet-stream"
    )
    assert refused.status_code == 422
    assert "The file is not a PDF, PNG or JPEG document." in refused.text
    accepted = upload(clients, episode, "scan", PDF, "application/octet-stream")
    assert accepted.status_code == 303, accepted.text[:500]
    [consent] = stored_consents(factory)
    assert consent.scan_content_type == "application/pdf"
