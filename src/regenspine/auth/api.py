"""JSON API for accounts and API tokens; the same services as the pages."""

from __future__ import annotations

from fastapi import APIRouter, Response

from regenspine.auth import service
from regenspine.auth.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    CredentialResetDone,
    CredentialResetRequest,
    Me,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from regenspine.web.openapi import RowId, responses
from regenspine.web.security import AccountApiActor, ApiActor, Db, Ident

router = APIRouter(tags=["accounts"])
REFUSALS = responses(401, 403)


# Any signed-in caller may ask who they are: no 403 (AccountApiActor has no role gate).
@router.get("/me", response_model=Me, responses=responses(401))
def me(actor: AccountApiActor, identity: Ident) -> Me:
    return Me(
        username=actor.username,
        full_name=actor.full_name,
        role=actor.role,
        permissions=sorted(actor.permissions),
        via_token=actor.via_token,
        csrf_token=identity.web_session.csrf_token if identity.web_session else None,
    )


@router.get("/users", response_model=list[UserPublic], responses=REFUSALS)
def list_users(db: Db, actor: ApiActor) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in service.list_users(db, actor)]


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=201,
    responses=REFUSALS | responses(422),
)
def create_user(body: UserCreate, db: Db, actor: ApiActor) -> UserPublic:
    user = service.create_user(
        db,
        actor,
        service.UserCreate(
            username=body.username,
            full_name=body.full_name,
            role=body.role.value,
            password=body.password,
            email=body.email,
            language=body.language,
        ),
    )
    return UserPublic.model_validate(user)


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    responses=REFUSALS | responses(404, 409),
)
def update_user(user_id: RowId, body: UserUpdate, db: Db, actor: ApiActor) -> UserPublic:
    user = service.update_user(
        db, actor, user_id, role=body.role.value if body.role else None, is_active=body.is_active
    )
    return UserPublic.model_validate(user)


@router.post(
    "/users/{user_id}/credential-resets",
    response_model=CredentialResetDone,
    responses=REFUSALS | responses(404, 409, 422),
)
def reset_credentials(
    user_id: RowId, body: CredentialResetRequest, db: Db, actor: ApiActor
) -> CredentialResetDone:
    """Resets another user's password (a one-time password, answered once), turns off their
    two-step sign-in, signs out their browsers or revokes their API tokens; the reason is
    recorded in the audit log."""
    done = service.reset_credentials(db, actor, user_id, body.what, body.reason)
    return CredentialResetDone(
        user=UserPublic.model_validate(done.user),
        sessions_ended=done.sessions_ended,
        api_tokens_revoked=done.api_tokens_revoked,
        one_time_password=done.one_time_password,
    )


@router.get("/tokens", response_model=list[ApiTokenPublic], responses=REFUSALS)
def list_tokens(db: Db, actor: ApiActor) -> list[ApiTokenPublic]:
    return [ApiTokenPublic.model_validate(t) for t in service.list_api_tokens(db, actor)]


@router.post(
    "/tokens",
    response_model=ApiTokenCreated,
    status_code=201,
    responses=REFUSALS | responses(400, 422),
)
def create_token(body: ApiTokenCreate, db: Db, actor: ApiActor, identity: Ident) -> ApiTokenCreated:
    token, secret = service.create_api_token(
        db, actor, body.name, body.scopes, body.days_valid, via_session=identity.web_session
    )
    return ApiTokenCreated.model_validate(
        ApiTokenPublic.model_validate(token).model_dump() | {"token": secret}
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    responses=REFUSALS | responses(404),
)
def revoke_token(token_id: RowId, db: Db, actor: ApiActor) -> Response:
    service.revoke_api_token(db, actor, token_id)
    return Response(status_code=204)
