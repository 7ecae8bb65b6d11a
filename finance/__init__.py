"""Finance: reconciling the ledger's billing documents with the payment processor, and exporting them
for an accounting system."""
