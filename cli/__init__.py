"""The `ledger` command line (Typer, with Rich): the top of the code's layering. It imports the service, the
read models, the finance reports and the API; none of them imports it (tests/unit/test_layering.py)."""
