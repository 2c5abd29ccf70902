"""Typed errors of the rewards package."""

from __future__ import annotations


class SettingError(ValueError):
    """A market setting (settings.toml, or a yuma-vectors file) outside what the rewards code accepts.

    The operator's to fix: the message names the setting, its value and the allowed values or range.
    """


class BackendUnavailable(SettingError, RuntimeError):
    """`array_backend = "cupy"` where CuPy finds no working CUDA device."""


class ValuationError(ValueError):
    """A value that cannot be weighed (NaN or infinite) reached the house weights.

    Values are KNN-Shapley of finite features and model scores of checked probabilities, so this is an internal bug,
    never a contributor's fault: it fails the run loudly instead of settling NaN weights. The message names the
    contributor and the value.
    """
