"""The `regenspine` command line: serve, migrate, create staff, load the demo, verify the audit,
and answer patients' data-rights requests."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from regenspine.config import UnsafeConfiguration, get_settings
from regenspine.db import session_factory, unit_of_work
from regenspine.errors import DomainError, InvalidInput

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.orm import Session

    from regenspine.auth.actor import Actor
    from regenspine.patients.models import Patient

app = typer.Typer(help="RegenSpine clinic software.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
privacy_app = typer.Typer(
    help="Patients' data-rights requests: access export and erasure.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(privacy_app, name="privacy")
mail_app = typer.Typer(help="Outgoing e-mail (notices to staff).", no_args_is_help=True)
app.add_typer(mail_app, name="mail")
console = Console()
err = Console(stderr=True)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


@app.callback()
def check_settings() -> None:
    """Refuse to run at all with unsafe settings, saying which variable to set."""
    try:
        get_settings()
    except (UnsafeConfiguration, ValidationError) as exc:
        err.print(f"[red]Configuration refused:[/red] {exc}")
        raise typer.Exit(2) from None


def alembic_config(url: str | None = None) -> Config:
    # Imported here: `regenspine serve` never needs Alembic, and its import slows start-up.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def upgrade_database(url: str | None = None) -> None:
    from alembic import command
    from sqlalchemy.engine import make_url

    target = make_url(url or get_settings().database_url)
    if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""
    upgrade_database()
    console.print(f"[green]Database is up to date[/green] ({_safe_url()})")


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(get_settings().database_url).render_as_string(hide_password=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Serve the web application and API."""
    import uvicorn

    settings = get_settings()  # refuse unsafe production settings before binding the port
    console.print(f"RegenSpine on [bold]http://{host}:{port}[/bold]")
    uvicorn.run(
        "regenspine.app:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies.replace(" ", ""),
        server_header=False,  # no "server: uvicorn" on every answer (ASVS V13.4.6)
        log_level="info",
    )


@app.command("create-user")
def create_user(
    username: Annotated[str, typer.Option(help="Login name.")],
    full_name: Annotated[str, typer.Option(help="The person's full name.")],
    role: Annotated[
        str,
        typer.Option(
            help="admin, coordinator, doctor, nurse, lab_technician, "
            "physiotherapist, medical_director or auditor."
        ),
    ],
    email: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str, typer.Option(help="pl or en.")] = "pl",
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Create a staff account (the first administrator, for example)."""
    from regenspine.auth import service as auth
    from regenspine.auth.actor import SYSTEM_ACTOR

    password = (
        sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass("Password: ")
    )
    try:
        with unit_of_work(session_factory(get_settings().database_url)) as session:
            user = auth.create_user(
                session,
                SYSTEM_ACTOR,
                auth.UserCreate(username, full_name, role, password, email, language),
            )
            name = user.username
    except InvalidInput as exc:
        for field, message in exc.field_errors.items():
            err.print(f"[red]{field}[/red]: {message}")
        raise typer.Exit(2) from None
    except DomainError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]Created[/green] {name} ({role})")


@app.command()
def demo(
    patients: Annotated[int, typer.Option(min=0, max=1_000_000, help="Number of patients.")] = 200,
) -> None:
    """Fill an empty database with the synthetic demo clinic."""
    from regenspine.demo import DEMO_PASSWORD, load_demo

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("Demo patients", total=patients)
        try:
            with unit_of_work(session_factory(get_settings().database_url)) as session:
                result = load_demo(session, patients, progress=lambda n: progress.advance(task, n))
        except DomainError as exc:
            err.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(2) from None
    if result.skipped:
        console.print("The database already has data; the demo clinic was not loaded.")
        return
    console.print(f"[green]Demo clinic loaded[/green]: {result.patients} patients.")
    console.print(f"Demo logins (password for all: [bold]{DEMO_PASSWORD}[/bold]):")
    for username, role in result.staff:
        console.print(f"  {username:<12} {role}")


@app.command("backup")
def backup_command(
    out: Annotated[
        Path, typer.Option("--out", help="File to write the backup to (readable only by you).")
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
) -> None:
    """Write a consistent backup of the database while the clinic keeps working."""
    from regenspine.backup import backup

    try:
        info = backup(get_settings().database_url, out, force=force)
    except DomainError as exc:
        err.print(f"[red]{escape(str(exc.message))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(
        f"[green]Backup written[/green]: {escape(str(info.path))} ({info.size_bytes} bytes)"
    )


@app.command("restore")
def restore_command(
    source: Annotated[Path, typer.Argument(help="A file written by `regenspine backup`.")],
    force: Annotated[
        bool, typer.Option(help="Replace a database that already has records.")
    ] = False,
) -> None:
    """Restore a backup into the configured database (an empty one unless --force)."""
    from regenspine.backup import restore

    try:
        info = restore(get_settings().database_url, source, force=force)
    except DomainError as exc:
        err.print(f"[red]{escape(str(exc.message))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    if info.needs_upgrade:
        console.print(
            f"[green]Restored[/green] a backup from an older schema ({info.revision}; this "
            f"version runs on {info.head}). [bold]Run `regenspine db upgrade` before starting "
            "RegenSpine[/bold], then `regenspine audit verify` to check the chain."
        )
        return
    console.print("[green]Restored.[/green] Run `regenspine audit verify` to check the chain.")


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="A head printed by an earlier check and kept outside the database (or its "
            "hash alone): exit 1 unless the chain still leads to it. Records deleted from the "
            "end of the log show only this way.",
        ),
    ] = None,
) -> None:
    """Walk the hash chain; exit 1 and name the first broken link if it was tampered with.
    Prints the head (the last record's number, time and hash) to keep outside the database."""
    from sqlalchemy import exists, or_, select

    from regenspine.audit import chain
    from regenspine.audit import service as audit
    from regenspine.auth.models import User
    from regenspine.db import DeferredWork, read_only_session
    from regenspine.patients.models import Patient

    try:
        head = None if expect_head is None else chain.WrittenHead.parse(expect_head)
    except ValueError as exc:
        err.print(f"[red]--expect-head[/red]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    factory = session_factory(get_settings().database_url)
    # The walk reads the whole log and writes nothing. On SQLite it reads on a reader connection,
    # in one WAL snapshot beside the writers: a transaction of the writers' pool would hold the
    # write lock (BEGIN IMMEDIATE) until the walk ends, and every writer would wait. On
    # PostgreSQL a transaction that only reads blocks no writer, and streams the log through a
    # server-side cursor, which the readers' autocommit connections cannot hold.
    sqlite = factory.kw["bind"].dialect.name == "sqlite"
    reader = read_only_session(factory, DeferredWork()) if sqlite else factory()
    with reader as session:
        result = audit.verify(session)
        if not result.records:
            holds = session.scalar(select(or_(exists(select(User.id)), exists(select(Patient.id)))))
            result = chain.check_not_emptied(result, database_holds_records=bool(holds))
    if head is not None:
        result = chain.check_head(result, head)
    if result.intact:
        console.print(f"[green]Audit chain intact[/green]: {result.records} records.")
        if head is not None:
            console.print(f"It still leads to the head written down: {head}", soft_wrap=True)
        if result.head_at is not None:
            console.print(
                f"Head record: {result.head_seq}, written {result.head_at:%Y-%m-%d %H:%M:%S} UTC"
            )
        console.print(f"Head hash: {result.head_hash}", soft_wrap=True)
        console.print(
            "Keep the head outside the database (a daily e-mail, a printed log book) and check "
            "the log against it later; records deleted from its end show no other way:"
        )
        console.print(
            f"  regenspine audit verify --expect-head {result.head_seq}:{result.head_hash}",
            soft_wrap=True,
        )
        return
    brk = result.first_break
    assert brk is not None
    err.print(f"[red]Audit chain BROKEN at record {brk.seq}[/red] ({brk.kind}): {brk.explanation}")
    err.print(f"Last good record: {result.head_seq}")
    err.print(f"Last good head hash: {result.head_hash}", soft_wrap=True)
    raise typer.Exit(1)


@mail_app.command("deliver")
def mail_deliver(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Most messages to send.")] = 100,
) -> None:
    """Send the queued e-mail that is due (run it every minute from cron or a systemd timer).
    Exit 1 when a message could not be sent: it stays queued and is tried again later."""
    from regenspine.mail import service as mail

    settings = get_settings()
    report = mail.deliver_pending(session_factory(settings.database_url), settings, limit=limit)
    console.print(
        f"Sent {report.sent}, failed {report.failed}; {report.waiting} waiting, "
        f"{report.given_up} given up after {mail.MAX_ATTEMPTS} attempts."
    )
    if report.failed:
        err.print(
            f"[red]{report.failed} message(s) could not be sent[/red] to "
            f"{settings.smtp_host}:{settings.smtp_port}; they will be tried again."
        )
        raise typer.Exit(1)


# --- patients' data rights ------------------------------------------------------------------

T = TypeVar("T")
# What the audit log shows as the address of someone acting at the command line.
CLI_SOURCE = "cli"
REASON_MAX = 2000  # as the API allows

PatientMrn = Annotated[
    str,
    typer.Option("--patient", help="The patient's medical record number, as printed or scanned."),
]
ActingAs = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this staff member (the role must allow data-rights requests); "
        "without it, as the system operator.",
    ),
]


def _acting_as(session: Session, username: str | None) -> Actor:
    from sqlalchemy import select

    from regenspine.auth import service as auth
    from regenspine.auth.actor import SYSTEM_ACTOR
    from regenspine.auth.models import User
    from regenspine.errors import N_, Message, NotFound

    if username is None:
        return SYSTEM_ACTOR
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or not user.is_active:
        raise NotFound(Message(N_("This account does not exist.")))
    return auth.actor_for(user, CLI_SOURCE)


def _patient_by_mrn(session: Session, value: str) -> Patient:
    from sqlalchemy import select

    from regenspine.errors import N_, Message, NotFound
    from regenspine.identifiers import mrn_from_scan
    from regenspine.patients.models import Patient

    mrn = mrn_from_scan(value)
    patient = session.scalar(select(Patient).where(Patient.mrn == mrn)) if mrn else None
    if patient is None:
        raise NotFound(Message(N_("There is no patient with this number.")))
    return patient


def _privacy_request(as_user: str | None, work: Callable[[Session, Actor], T]) -> T:
    """Runs one request in one transaction, committed here; a refusal is rolled back, then
    written to the audit log on its own, as the web boundary does."""
    from regenspine.auth.permissions import Permission
    from regenspine.web.boundary import record_refusal

    factory = session_factory(get_settings().database_url)
    actor: Actor | None = None
    try:
        with unit_of_work(factory) as session:
            actor = _acting_as(session, as_user)
            actor.require(Permission.PRIVACY_MANAGE)
            return work(session, actor)
    except InvalidInput as exc:
        for field, message in exc.field_errors.items():
            err.print(f"[red]{field}[/red]: {escape(str(message))}")
        raise typer.Exit(2) from None
    except DomainError as exc:
        if actor is not None and exc.refusal is not None:
            with unit_of_work(factory) as session:
                record_refusal(session, actor, exc)
        err.print(f"[red]{escape(str(exc.message))}[/red]")
        raise typer.Exit(1) from None


@privacy_app.command(
    "anonymise",
    help="Erasure request: after the legal retention period, anonymise the patient's identity. "
    "During retention the request is refused with the date and the legal basis, the refusal is "
    "written to the audit log, and the command exits with 1.",
)
def privacy_anonymise(
    patient: PatientMrn,
    reason: Annotated[
        str, typer.Option(help="The request and how it arrived, e.g. 'Letter of 3 May 2046'.")
    ],
    as_user: ActingAs = None,
) -> None:
    from regenspine.privacy import service as privacy

    if len(reason.strip()) > REASON_MAX:
        err.print(f"[red]reason[/red]: at most {REASON_MAX} characters.")
        raise typer.Exit(2)

    def anonymise(session: Session, actor: Actor) -> tuple[str, privacy.ErasureOutcome]:
        found = _patient_by_mrn(session, patient)
        return found.mrn, privacy.request_erasure(session, actor, found.id, reason)

    mrn, outcome = _privacy_request(as_user, anonymise)
    if not outcome.erased:
        err.print(f"[red]{escape(str(outcome.message))}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]{escape(str(outcome.message))}[/green] ({mrn})")


@privacy_app.command(
    "export",
    help="Access request (GDPR art. 15): everything held about the patient, including every "
    "access to the record, as JSON or PDF. The export is written to the audit log.",
)
def privacy_export(
    patient: PatientMrn,
    out: Annotated[Path, typer.Option("--out", help="File to write (readable only by you).")],
    pdf: Annotated[bool, typer.Option("--pdf", help="A readable PDF instead of JSON.")] = False,
    lang: Annotated[str, typer.Option(help="Language of the PDF: pl or en.")] = "pl",
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
    as_user: ActingAs = None,
) -> None:
    from regenspine.privacy import service as privacy

    if lang not in ("pl", "en"):
        err.print("[red]lang[/red]: pl or en.")
        raise typer.Exit(2)
    if out.exists() and not force:
        err.print(
            f"[red]{escape(str(out))} already exists.[/red] Choose another file or add --force."
        )
        raise typer.Exit(2)
    if not out.parent.is_dir():
        err.print(f"[red]The folder {escape(str(out.parent))} does not exist.[/red]")
        raise typer.Exit(2)

    def export(session: Session, actor: Actor) -> tuple[str, dict[str, object]]:
        found = _patient_by_mrn(session, patient)
        return found.mrn, privacy.access_export(session, actor, found.id)

    mrn, content = _privacy_request(as_user, export)
    if pdf:
        from regenspine.reports.pdf import render_pdf

        data = render_pdf("reports/access_export.html", {"export": content}, lang)
    else:
        data = (json.dumps(content, ensure_ascii=False, indent=2, default=str) + "\n").encode()
    # Health data: created readable by the owner only, also when an existing file is replaced.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
    console.print(
        f"[green]Access export written[/green]: {escape(str(out))} ({len(data)} bytes, {mrn})"
    )


if __name__ == "__main__":
    app()
