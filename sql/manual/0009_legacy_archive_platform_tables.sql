-- Accounts V2, Stage F: archive the legacy platform_* tables as legacy.<name>_legacy.
-- Data is kept: tables are moved and renamed, nothing is deleted.
--
-- MANUAL ONLY: run by hand with psql once v2 reads and writes are stable, verify
-- passes and the rollback window is closed. Never run by migrate (it skips manual/),
-- and never during a rollback: v1 reads and writes need these tables in public.

BEGIN;

CREATE SCHEMA IF NOT EXISTS legacy;

-- IF EXISTS: a database that never had (or already archived) a table still succeeds.
ALTER TABLE IF EXISTS public.platform_workspaces SET SCHEMA legacy;
ALTER TABLE IF EXISTS public.platform_workspace_members SET SCHEMA legacy;
ALTER TABLE IF EXISTS public.platform_managed_users SET SCHEMA legacy;
ALTER TABLE IF EXISTS public.platform_books SET SCHEMA legacy;
ALTER TABLE IF EXISTS public.platform_book_snapshots SET SCHEMA legacy;
ALTER TABLE IF EXISTS public.platform_audit_events SET SCHEMA legacy;
ALTER TABLE IF EXISTS public.platform_permissions SET SCHEMA legacy;

ALTER TABLE IF EXISTS legacy.platform_workspaces RENAME TO platform_workspaces_legacy;
ALTER TABLE IF EXISTS legacy.platform_workspace_members RENAME TO platform_workspace_members_legacy;
ALTER TABLE IF EXISTS legacy.platform_managed_users RENAME TO platform_managed_users_legacy;
ALTER TABLE IF EXISTS legacy.platform_books RENAME TO platform_books_legacy;
ALTER TABLE IF EXISTS legacy.platform_book_snapshots RENAME TO platform_book_snapshots_legacy;
ALTER TABLE IF EXISTS legacy.platform_audit_events RENAME TO platform_audit_events_legacy;
ALTER TABLE IF EXISTS legacy.platform_permissions RENAME TO platform_permissions_legacy;

COMMIT;
