"""Command handling: the application service of the ledger, its ports and their adapters."""
