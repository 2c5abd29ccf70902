"""Typed errors of the rewards package."""

from __future__ import annotations


class ValuationError(ValueError):
    """A value that cannot be weighed (NaN or infinite) reached the house weights.

    Values are KNN-Shapley of finite features and model scores of checked probabilities, so this is an internal bug,
    never a contributor's fault: it fails the run loudly instead of settling NaN weights. The message names the
    contributor and the value.
    """
