"""The market engine: one epoch and its stages, the home, settings, keys, actions and the lock; usable without the CLI."""
