"""Staff accounts, roles and permissions, sign-in with MFA, server-side sessions and API tokens."""
