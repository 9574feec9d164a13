"""A deploy env file shaped like the team's real ones, for the demo."""

DEMO_ENV = """\
# ============================================================
#  ternent-api: production deploy environment
#  Managed by the platform team. Do not commit real secrets.
# ============================================================

# --- Runtime ---------------------------------------------------
NODE_ENV=production
PORT=3000
LOG_LEVEL=info # raise to debug only while on call

# --- Database ----------------------------------------------------
DATABASE_URL=postgresql://ternent:demo@localhost:5432/ternent
DATABASE_POOL_MAX=20

# --- BetterAuth ----------------------------------------------------
AUTH_SECRET="demo-secret-not-for-production"
AUTH_BASE_URL=https://api.example.test
AUTH_SIGNING_KEY="-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\nBKcwggSjAgEAAoIBAQDdemo0nly\\n-----END PRIVATE KEY-----\\n"

# --- Feature config (JSON) ----------------------------------------
FEATURE_LIMITS='{"books": 50, "snapshots": {"keep": 20, "compress": true}}'

# Accounts v2 migration flags
ACCOUNT_SCHEMA_V2_READS=false
ACCOUNT_SCHEMA_V2_WRITES=false
ACCOUNT_SCHEMA_V2_DUAL_WRITE=false
ACCOUNT_API_ACCEPT_WORKSPACE_ALIAS=true

# --- Observability ---------------------------------------------------
SENTRY_DSN=
OTEL_EXPORTER_OTLP_ENDPOINT=http://collector.internal:4318
"""
