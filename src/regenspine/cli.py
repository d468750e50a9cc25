"""The `regenspine` command line: serve, migrate, create staff, load the demo, verify the audit."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from alembic.config import Config
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from regenspine.config import UnsafeConfiguration, get_settings
from regenspine.db import session_factory, unit_of_work
from regenspine.errors import DomainError, InvalidInput

app = typer.Typer(help="RegenSpine clinic software.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
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

    get_settings()  # refuse unsafe production settings before binding the port
    console.print(f"RegenSpine on [bold]http://{host}:{port}[/bold]")
    uvicorn.run(
        "regenspine.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
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
        with unit_of_work(session_factory(get_settings().database_url)) as session:
            result = load_demo(session, patients, progress=lambda n: progress.advance(task, n))
    if result.skipped:
        console.print("The database already has data; the demo clinic was not loaded.")
        return
    console.print(f"[green]Demo clinic loaded[/green]: {result.patients} patients.")
    console.print(f"Demo logins (password for all: [bold]{DEMO_PASSWORD}[/bold]):")
    for username, role in result.staff:
        console.print(f"  {username:<12} {role}")


@app.command("backup")
def backup_command(
    out: Annotated[Path, typer.Option("--out", help="File to write the backup to.")],
) -> None:
    """Write a consistent backup of the database while the clinic keeps working."""
    from regenspine.backup import backup

    try:
        info = backup(get_settings().database_url, out)
    except DomainError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]Backup written[/green]: {info.path} ({info.size_bytes} bytes)")


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
        restore(get_settings().database_url, source, force=force)
    except DomainError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print("[green]Restored.[/green] Run `regenspine audit verify` to check the chain.")


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exit 1 and name the first broken link if it was tampered with."""
    from regenspine.audit import service as audit

    with unit_of_work(session_factory(get_settings().database_url)) as session:
        result = audit.verify(session)
    if result.intact:
        console.print(f"[green]Audit chain intact[/green]: {result.records} records.")
        console.print(f"Head hash: {result.head_hash}")
        return
    brk = result.first_break
    assert brk is not None
    err.print(f"[red]Audit chain BROKEN at record {brk.seq}[/red] ({brk.kind}): {brk.explanation}")
    err.print(f"Last good head hash: {result.head_hash}")
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
