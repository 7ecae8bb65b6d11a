"""The thin HTTP layer of the ledger."""
