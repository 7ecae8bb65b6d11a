"""The domain of the subscription ledger: pure, with no I/O, clock or settings.

Time, prices and payment are parameters of the aggregates' methods.
"""
