"""What an operator decides: where the cutover stands, and the flag changes the runbook allows."""
