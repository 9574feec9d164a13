"""cutover-tui: the Accounts V2 cutover runbook, made executable."""
