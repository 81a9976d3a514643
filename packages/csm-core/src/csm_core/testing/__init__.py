"""Random models of the exact architecture for tests and the oracle tool (seeded, numpy only)."""
