"""Tests of rewards/."""
