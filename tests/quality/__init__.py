"""Tests of quality/."""
