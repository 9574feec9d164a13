"""The console's state in the target database: connections, the journal, the operator lock,
the facts the matrix reasons over, and the session both faces open."""
