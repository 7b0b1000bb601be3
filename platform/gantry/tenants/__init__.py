"""Tenants: their records, quotas and isolation, API keys and scopes (docs/tenants.md)."""
from .model import DEFAULT_TENANT, Isolation, Quotas, Scope, Tenant, TenantError, qualify, split

__all__ = ["DEFAULT_TENANT", "Isolation", "Quotas", "Scope", "Tenant", "TenantError", "qualify", "split"]
