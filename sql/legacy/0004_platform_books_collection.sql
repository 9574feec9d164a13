-- Legacy migration 0004: books belong to a collection, 'primary' unless stated.
-- One live (not deleted) book per managed user and collection within a workspace.

ALTER TABLE platform_books
  ADD COLUMN IF NOT EXISTS collection_id TEXT NOT NULL DEFAULT 'primary';

CREATE UNIQUE INDEX IF NOT EXISTS uq_platform_books_workspace_user_collection_active
  ON platform_books (workspace_id, managed_user_id, collection_id)
  WHERE status != 'deleted';
