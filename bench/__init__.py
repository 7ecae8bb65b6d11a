"""Benchmarks of the ledger: scripts that print figures (see bench/README.md)."""
