"""Usage metering, cost estimates and the audit stream (docs/tenants.md "Usage and cost", "Audit")."""
