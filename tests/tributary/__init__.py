"""Tests of tributary/, the CLI."""
