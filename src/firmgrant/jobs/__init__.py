"""The worker's jobs; each is a function of the ledger, a client and the clock."""
