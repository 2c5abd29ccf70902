"""The DuckDB ledger: accounts, epochs, contributions, rewards, append-only transfers and the audit chain."""
