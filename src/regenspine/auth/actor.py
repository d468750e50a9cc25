"""The person (or integration token) acting in a request, as services see them."""

from __future__ import annotations

from dataclasses import dataclass

from regenspine.auth.permissions import PERMISSION_LABELS, ROLE_PERMISSIONS, Permission, Role
from regenspine.errors import N_, Message, PermissionDenied, RefusalRecord


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    role: Role | None
    source_ip: str = ""
    # An API token may narrow what its owner's role allows; None means "everything the role has".
    scopes: frozenset[Permission] | None = None
    via_token: bool = False
    language: str = "en"
    full_name: str = ""
    # The operator at the command line (migrations, demo, create-user) acts with every permission.
    is_system: bool = False

    @property
    def permissions(self) -> frozenset[Permission]:
        if self.role is None:
            return frozenset()
        granted = ROLE_PERMISSIONS[self.role]
        return granted if self.scopes is None else granted & self.scopes

    def can(self, permission: Permission) -> bool:
        return self.is_system or permission in self.permissions

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise PermissionDenied(
                Message(
                    N_("Your role does not allow you to %(action)s (%(permission)s)."),
                    action=Message(PERMISSION_LABELS[permission]),
                    permission=str(permission),
                ),
                refusal=RefusalRecord(
                    action="permission.denied", entity_type="permission", entity_id=permission
                ),
            )


SYSTEM_ACTOR = Actor(user_id=None, username="system", role=None, is_system=True)
ANONYMOUS = Actor(user_id=None, username="anonymous", role=None)
