"""Array-module selection: NumPy everywhere, CuPy where a working CUDA device is found.

This is the only module that imports CuPy, and it does so lazily so that importing `rewards` never needs a GPU.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from protocol.settings_rules import ARRAY_BACKENDS as BACKENDS
from rewards.errors import BackendUnavailable, SettingError


@functools.lru_cache(maxsize=1)
def _probe_cupy() -> tuple[ModuleType | None, str]:
    """Import CuPy and run one tiny kernel on the current device; (module, "") or (None, why not). Cached."""
    try:
        import cupy  # noqa: PLC0415 - lazy on purpose: importing rewards must not need CUDA
    except Exception as exc:  # ImportError, or a broken CUDA install failing at import
        return None, f"cupy does not import ({type(exc).__name__}: {exc})"
    try:
        if not cupy.cuda.is_available():
            return None, "cupy imports but finds no CUDA device"
        # is_available() only counts devices; compiling and running a kernel proves the driver/toolkit work.
        if int((cupy.arange(4, dtype=cupy.float64) * 2.0).sum().item()) != 12:
            return None, "cupy test kernel returned a wrong result"
    except Exception as exc:
        return None, f"cupy finds a device but it does not work ({type(exc).__name__}: {exc})"
    return cupy, ""


def gpu_available() -> bool:
    """True when CuPy imports and a CUDA device runs a test kernel (probed once per process)."""
    return _probe_cupy()[0] is not None


def get_xp(name: str = "auto") -> ModuleType:
    """Return the array module for `name`: "numpy", "cupy" (BackendUnavailable if unusable) or "auto" (CuPy if
    usable); SettingError for any other name."""
    key = str(name).strip().lower()
    if key == "numpy":
        return np
    if key not in ("auto", "cupy"):
        raise SettingError(f"unknown array backend {name!r}; use one of {', '.join(BACKENDS)}")
    cupy, why = _probe_cupy()
    if cupy is not None:
        return cupy
    if key == "cupy":
        raise BackendUnavailable(
            f"the 'cupy' backend was requested but is not usable: {why}. Install the gpu extra "
            "(pip install 'tributary[gpu]', i.e. cupy-cuda12x) on a machine with a CUDA 12 device, "
            "or choose the 'numpy' or 'auto' backend."
        )
    return np


def _is_cupy_array(a: Any) -> bool:
    """True for a CuPy ndarray, detected without importing CuPy."""
    return type(a).__module__.split(".", 1)[0] == "cupy" and hasattr(a, "get")


def to_numpy(a: Any) -> np.ndarray:
    """Return `a` as a NumPy array, copying device arrays to the host (NumPy arrays pass through unchanged)."""
    if isinstance(a, np.ndarray):
        return a
    if _is_cupy_array(a):
        return a.get()
    return np.asarray(a)
