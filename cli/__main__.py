"""`python -m cli ARGS` runs `ledger ARGS`."""

from cli.main import run

run()
