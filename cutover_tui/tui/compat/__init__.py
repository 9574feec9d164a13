"""Every workaround that touches Textual's internals, each with the condition for removing it."""
