"""The built-in demo: an embedded Postgres with the legacy schema, seeded, and a deploy env file."""
