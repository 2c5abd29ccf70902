"""Yuma Consensus: the public entry points, plus replay of the golden vectors (../shared/reference/yuma-vectors).

- `yuma_epoch` (rewards/yuma_core.py): steps 4-11 on V x M weights, every validator active and permitted.
- `chain_epoch` (rewards/yuma_chain.py): the chain's whole epoch (steps 1-12) on an `EpochState`: stake threshold,
  permits, activity, weight masks, bond hygiene, optional u16 storage, and the owner / miners / validators split.
Both run the same core math, written against NumPy or CuPy (`xp`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from rewards.yuma_chain import (
    ChainEpochResult,
    EpochState,
    chain_epoch,
    fixed_proportion_to_u16,
    validator_permits,
)
from rewards.yuma_core import STORAGES, YUMA_VERSIONS, YumaParams, YumaResult, yuma_epoch
from rewards.errors import SettingError

DOC_VERSIONS = ("yuma2", "yuma3", "yuma3_liquid")

__all__ = [
    "DOC_VERSIONS", "STORAGES", "YUMA_VERSIONS", "ChainEpochResult", "EpochState", "YumaParams", "YumaResult",
    "chain_epoch", "fixed_proportion_to_u16", "params_from_doc", "replay", "validator_permits", "yuma_epoch",
]


def params_from_doc(doc: dict) -> YumaParams:
    """YumaParams from a yuma-vectors document's "version" and "params"."""
    version = doc["version"]
    if version not in DOC_VERSIONS:
        raise SettingError(f"unknown yuma-vectors version {version!r}; expected one of {DOC_VERSIONS}")
    p = doc["params"]
    liquid = p.get("liquid_alpha", {})
    defaults = YumaParams()
    return YumaParams(
        kappa=float(p.get("kappa", defaults.kappa)),
        bonds_penalty=float(p.get("bond_penalty", defaults.bonds_penalty)),
        bonds_moving_average=float(p.get("bonds_moving_average", defaults.bonds_moving_average)),
        yuma_version="yuma2" if version == "yuma2" else "yuma3",
        liquid_alpha_enabled=version == "yuma3_liquid",
        alpha_low=float(liquid.get("alpha_low", defaults.alpha_low)),
        alpha_high=float(liquid.get("alpha_high", defaults.alpha_high)),
        alpha_sigmoid_steepness=float(liquid.get("steepness", defaults.alpha_sigmoid_steepness)),
    )


def replay(doc: dict, *, xp: Any = None) -> dict:
    """Replay a yuma-vectors document, carrying bonds across epochs; each epoch's "expected" becomes "outputs"."""
    params = params_from_doc(doc)
    out = copy.deepcopy(doc)
    bonds: np.ndarray | None = None
    for epoch in out["epochs"]:
        weights = np.asarray(epoch["W"], dtype=np.float64)
        if bonds is not None and epoch.get("reset_bond_columns"):
            bonds = bonds.copy()
            bonds[:, list(epoch["reset_bond_columns"])] = 0.0
        r = yuma_epoch(weights, epoch["S"], bonds, params, xp=xp)
        bonds = r.bonds
        epoch.pop("expected", None)
        epoch["outputs"] = {
            "consensus": r.consensus.tolist(),
            "incentive": r.incentive.tolist(),
            "dividends": r.dividends.tolist(),
            "validator_trust": r.validator_trust.tolist(),
            "bonds": r.bonds.tolist(),
        }
    return out
