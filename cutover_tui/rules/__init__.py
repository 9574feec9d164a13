"""The runbook as rules: the flags, the promotion matrix, the runbook file's model, the §3 mapping.

Pure where it can be (the matrix has no I/O and no clock); nothing here writes.
"""
