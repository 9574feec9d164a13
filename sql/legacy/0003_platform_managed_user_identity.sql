-- Legacy migration 0003: managed users gain an optional identity key.
-- A key is unique per workspace and profile, once both profile and fingerprint are set.

ALTER TABLE platform_managed_users
  ADD COLUMN IF NOT EXISTS profile_id TEXT,
  ADD COLUMN IF NOT EXISTS identity_public_key TEXT,
  ADD COLUMN IF NOT EXISTS identity_key_fingerprint TEXT;

CREATE UNIQUE INDEX IF NOT EXISTS uq_platform_managed_users_workspace_profile_fingerprint
  ON platform_managed_users (workspace_id, profile_id, identity_key_fingerprint)
  WHERE profile_id IS NOT NULL AND identity_key_fingerprint IS NOT NULL;
