-- Legacy migration 0001: auth tables and the workspace-scoped platform_* tables.
-- Later files add snapshot payloads (0002), identity keys (0003) and collections (0004).

CREATE TABLE IF NOT EXISTS auth_users (
  id TEXT CONSTRAINT auth_users_pkey PRIMARY KEY,
  email TEXT CONSTRAINT auth_users_email_key UNIQUE,
  name TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS auth_sessions (
  id TEXT CONSTRAINT auth_sessions_pkey PRIMARY KEY,
  user_id TEXT NOT NULL
    CONSTRAINT auth_sessions_user_id_fkey REFERENCES auth_users (id) ON DELETE CASCADE,
  token_hash TEXT NOT NULL CONSTRAINT auth_sessions_token_hash_key UNIQUE,
  expires_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE IF NOT EXISTS auth_passkeys (
  id TEXT CONSTRAINT auth_passkeys_pkey PRIMARY KEY,
  user_id TEXT NOT NULL
    CONSTRAINT auth_passkeys_user_id_fkey REFERENCES auth_users (id) ON DELETE CASCADE,
  credential_id TEXT NOT NULL CONSTRAINT auth_passkeys_credential_id_key UNIQUE,
  public_key TEXT NOT NULL,
  counter BIGINT NOT NULL DEFAULT 0,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_auth_passkeys_user ON auth_passkeys (user_id);

CREATE TABLE IF NOT EXISTS auth_email_verifications (
  id TEXT CONSTRAINT auth_email_verifications_pkey PRIMARY KEY,
  user_id TEXT NOT NULL
    CONSTRAINT auth_email_verifications_user_id_fkey REFERENCES auth_users (id) ON DELETE CASCADE,
  email TEXT NOT NULL,
  code_hash TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_auth_email_verifications_user
  ON auth_email_verifications (user_id);

CREATE TABLE IF NOT EXISTS platform_workspaces (
  id TEXT CONSTRAINT platform_workspaces_pkey PRIMARY KEY,
  name TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS platform_workspace_members (
  id TEXT CONSTRAINT platform_workspace_members_pkey PRIMARY KEY,
  workspace_id TEXT NOT NULL
    CONSTRAINT platform_workspace_members_workspace_id_fkey
    REFERENCES platform_workspaces (id) ON DELETE CASCADE,
  user_id TEXT NOT NULL
    CONSTRAINT platform_workspace_members_user_id_fkey
    REFERENCES auth_users (id) ON DELETE CASCADE,
  role TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'active',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  CONSTRAINT platform_workspace_members_workspace_user_key UNIQUE (workspace_id, user_id)
);

CREATE INDEX IF NOT EXISTS idx_platform_workspace_members_user_status
  ON platform_workspace_members (user_id, status);

CREATE TABLE IF NOT EXISTS platform_permissions (
  id TEXT CONSTRAINT platform_permissions_pkey PRIMARY KEY,
  member_id TEXT NOT NULL
    CONSTRAINT platform_permissions_member_id_fkey
    REFERENCES platform_workspace_members (id) ON DELETE CASCADE,
  capability TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  CONSTRAINT platform_permissions_member_capability_key UNIQUE (member_id, capability)
);

-- Audit history outlives the workspace and the actor, hence SET NULL.
CREATE TABLE IF NOT EXISTS platform_audit_events (
  id TEXT CONSTRAINT platform_audit_events_pkey PRIMARY KEY,
  workspace_id TEXT
    CONSTRAINT platform_audit_events_workspace_id_fkey
    REFERENCES platform_workspaces (id) ON DELETE SET NULL,
  actor_user_id TEXT
    CONSTRAINT platform_audit_events_actor_user_id_fkey
    REFERENCES auth_users (id) ON DELETE SET NULL,
  event_type TEXT NOT NULL,
  payload JSONB NOT NULL DEFAULT '{}',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS platform_managed_users (
  id TEXT CONSTRAINT platform_managed_users_pkey PRIMARY KEY,
  workspace_id TEXT NOT NULL
    CONSTRAINT platform_managed_users_workspace_id_fkey
    REFERENCES platform_workspaces (id) ON DELETE CASCADE,
  display_name TEXT NOT NULL,
  avatar_public_id TEXT,
  user_key TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'active',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  CONSTRAINT platform_managed_users_workspace_user_key_key UNIQUE (workspace_id, user_key)
);

CREATE TABLE IF NOT EXISTS platform_books (
  id TEXT CONSTRAINT platform_books_pkey PRIMARY KEY,
  workspace_id TEXT NOT NULL
    CONSTRAINT platform_books_workspace_id_fkey
    REFERENCES platform_workspaces (id) ON DELETE CASCADE,
  managed_user_id TEXT NOT NULL
    CONSTRAINT platform_books_managed_user_id_fkey
    REFERENCES platform_managed_users (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'active',
  current_version BIGINT NOT NULL DEFAULT 0,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS platform_book_snapshots (
  id TEXT CONSTRAINT platform_book_snapshots_pkey PRIMARY KEY,
  book_id TEXT NOT NULL
    CONSTRAINT platform_book_snapshots_book_id_fkey
    REFERENCES platform_books (id) ON DELETE CASCADE,
  version BIGINT NOT NULL,
  cipher_object_key TEXT NOT NULL,
  cipher_sha256 TEXT NOT NULL,
  wrapped_dek TEXT NOT NULL,
  ledger_head TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  CONSTRAINT platform_book_snapshots_book_version_key UNIQUE (book_id, version)
);
