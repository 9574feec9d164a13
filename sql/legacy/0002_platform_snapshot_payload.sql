-- Legacy migration 0002: snapshots may carry their decrypted payload inline.
-- Nullable because older snapshots have none, and it can be large.

ALTER TABLE platform_book_snapshots ADD COLUMN IF NOT EXISTS payload_json JSONB;
