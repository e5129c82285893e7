"""The ``castway`` command's exit codes."""

EXIT_OK = 0
# It ran and failed: a port in use, a server that refused or could not be reached.
EXIT_FAILED = 1
# What it was asked is wrong: a bad URI, flags that go together given alone.
EXIT_USAGE = 2
