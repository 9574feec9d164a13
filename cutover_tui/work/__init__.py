"""The runbook's work on the database: migrate (A), recon (0), backfill (B), verify (G), the API
read check (C), the archive (F), and the gated job runner around the long ones."""
