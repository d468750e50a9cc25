"""The migrated schema equals the models; the command line works end to end."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from regenspine.audit import service as audit
from regenspine.audit.models import AuditRecord
from regenspine.auth.models import User
from regenspine.config import get_settings
from regenspine.db import Base
from regenspine.episodes.models import Episode
from regenspine.patients.models import CareTeamMember, Patient
from regenspine.patients.pesel import parse_pesel


def test_migrations_produce_exactly_the_schema_the_models_declare(database_url, factory):
    import regenspine.models  # noqa: F401  (registers every table)

    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == []


@pytest.fixture
def cli_env(database_url, monkeypatch):
    from regenspine.cli import app

    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield CliRunner(), app
    get_settings.cache_clear()


def test_create_user_command_refuses_a_common_password_and_creates_with_a_good_one(
    cli_env, factory
):
    runner, app = cli_env
    args = [
        "create-user",
        "--username",
        "ewa.admin",
        "--full-name",
        "Ewa Admin",
        "--role",
        "admin",
        "--password-stdin",
    ]
    weak = runner.invoke(app, args, input="password1234\n")
    assert weak.exit_code == 2 and "leaked" in weak.output
    good = runner.invoke(app, args, input="lantern-orchard-copper-91\n")
    assert good.exit_code == 0, good.output
    bad_role = runner.invoke(
        app,
        [*args[:-2], "--role", "janitor", "--password-stdin"],
        input="lantern-orchard-copper-91\n",
    )
    assert bad_role.exit_code == 2
    with factory() as s:
        assert s.scalars(select(User.username)).all() == ["ewa.admin"]


def test_demo_command_fills_an_empty_clinic_once_with_valid_synthetic_patients(cli_env, factory):
    runner, app = cli_env
    first = runner.invoke(app, ["demo", "--patients", "120"])
    assert first.exit_code == 0, first.output
    assert "coordinator" in first.output and "spine-demo-harbour-47" in first.output
    second = runner.invoke(app, ["demo", "--patients", "120"])
    assert "already has data" in second.output
    with factory() as s:
        patients = s.scalars(select(Patient)).all()
        roles = set(s.scalars(select(User.role)))
        team = s.scalar(select(func.count(CareTeamMember.id)))
        result = audit.verify(s)
        states = dict(s.execute(select(Episode.state, func.count()).group_by(Episode.state)).all())
    assert len(patients) == 120
    assert roles == {
        "admin",
        "coordinator",
        "doctor",
        "nurse",
        "lab_technician",
        "physiotherapist",
        "medical_director",
        "auditor",
    }
    for p in patients:
        if p.id_type == "pesel":
            decoded = parse_pesel(p.national_id)
            assert decoded.birth_date == p.date_of_birth and decoded.sex == p.sex
    assert len({p.mrn for p in patients}) == 120
    assert team == 12
    assert result.intact and result.records > 8 + 120 + 1
    assert states == {
        "referred": 5,
        "urgent_referral": 2,
        "not_eligible": 3,
        "assessed": 3,
        "eligible": 6,
        "consented": 3,
    }


def test_db_upgrade_command_is_idempotent(cli_env):
    runner, app = cli_env
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0


def test_commands_refuse_to_run_in_production_with_the_default_secret_key(monkeypatch):
    from regenspine.cli import app

    monkeypatch.setenv("REGENSPINE_ENV", "production")
    monkeypatch.delenv("REGENSPINE_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["audit", "verify"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "REGENSPINE_SECRET_KEY" in result.output


def test_the_demo_clinic_is_never_loaded_in_production(cli_env, factory, monkeypatch):
    """ASVS 5.0 V6.3.2: the demo staff accounts (an administrator among them) share a password
    printed in the README; in production `regenspine demo` refuses, says what to do instead,
    and leaves the empty database empty."""
    runner, app = cli_env
    monkeypatch.setenv("REGENSPINE_ENV", "production")
    monkeypatch.setenv("REGENSPINE_SECRET_KEY", "production-test-" + "k" * 40)
    monkeypatch.setenv("REGENSPINE_ARGON2_TIME_COST", "2")  # the lowest production accepts
    monkeypatch.setenv("REGENSPINE_ARGON2_MEMORY_COST", "19456")
    get_settings.cache_clear()
    refused = runner.invoke(app, ["demo", "--patients", "5"])
    said = " ".join(refused.output.split())  # the console wraps long lines
    assert refused.exit_code == 2, said
    assert "cannot be loaded in production" in said
    assert "regenspine create-user" in said
    assert "spine-demo-harbour-47" not in said
    with factory() as s:
        assert s.scalar(select(func.count(User.id))) == 0
        assert s.scalar(select(func.count(Patient.id))) == 0
        assert s.scalar(select(func.count(AuditRecord.id))) == 0


def test_serve_believes_forwarded_addresses_only_from_the_configured_proxies(
    monkeypatch, database_url
):
    """ASVS 5.0 V4.1.3 / V16.2.1: the client address used for sign-in throttling and written to
    the audit log comes from X-Forwarded-For only when a trusted proxy sent it; the clinic
    names its proxies (a proxy on another machine, a load balancer's network)."""
    import uvicorn

    from regenspine.cli import app

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("REGENSPINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["serve", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert seen["forwarded_allow_ips"] == "127.0.0.1"  # a proxy on the same machine
    assert seen["proxy_headers"] is True and seen["workers"] == 2

    monkeypatch.setenv("REGENSPINE_TRUSTED_PROXIES", "10.20.0.5, 10.30.0.0/16")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert seen["forwarded_allow_ips"] == "10.20.0.5,10.30.0.0/16"

    monkeypatch.setenv("REGENSPINE_TRUSTED_PROXIES", "*")  # trusting everyone is refused
    get_settings.cache_clear()
    seen.clear()
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code != 0
    assert seen == {}
    get_settings.cache_clear()


def test_tokens_made_without_an_expiry_expire_a_year_after_they_were_made(empty_database_url):
    """The revision that makes every API token expire (ASVS V7.1.1) gives a token made before
    it, without an expiry, the longest a new token may have: 366 days from when it was made."""
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from sqlalchemy import text

    from regenspine.cli import alembic_config

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0004_name_prefix_index")
    made = datetime(2026, 1, 10, 8, 30, tzinfo=UTC)
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, full_name, role, password_hash, is_active, "
                "mfa_enabled, language, created_at, password_changed_at) VALUES ('lab', 'Lab', "
                "'nurse', 'x', true, false, 'en', :at, :at)"
            ),
            {"at": made.replace(tzinfo=None)},
        )
        conn.execute(
            text(
                "INSERT INTO api_tokens (user_id, name, token_hash, prefix, scopes, created_at) "
                "SELECT id, 'old', :hash, 'rst_old', 'patient:read', :at FROM users"
            ),
            {"hash": "a" * 64, "at": made.replace(tzinfo=None)},
        )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        expires = conn.execute(text("SELECT expires_at FROM api_tokens")).scalar_one()
    engine.dispose()
    if isinstance(expires, str):  # SQLite hands back text
        expires = datetime.fromisoformat(expires)
    if expires.tzinfo is None:  # SQLite keeps UTC without the zone
        expires = expires.replace(tzinfo=UTC)
    assert expires == made + timedelta(days=366)
