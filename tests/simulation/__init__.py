"""Tests of simulation/."""
