"""The ``femno`` command line: one sub-command module per capability."""
