"""One screen per file; screens never talk to the database, the app does."""
