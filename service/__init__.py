"""The service around the ledger: settings, the composition root, and the command line."""
