"""Weight copying under Yuma Consensus, with and without commit-reveal: a simulation that measures the defence.

Contributors' true quality drifts from epoch to epoch. Honest validators observe it (with noise) and set weights;
a copier sets the consensus of whatever weights are public when it must submit:
- commit-reveal off: honest weights are public as soon as they are sent, so the copier submits their consensus
  in the same epoch, without doing any work;
- commit-reveal on: weights committed in epoch t are revealed (and used) in t+1, so the freshest public weights
  when the copier commits are a whole epoch old; its weights land two observations behind the truth, the honest
  ones one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rewards.yuma_core import YumaParams, yuma_epoch

QUALITY_DRIFT_SIGMA = 0.5  # log-normal step of each contributor's quality per epoch
OBSERVATION_NOISE_SIGMA = 0.1  # honest validators' measurement noise, relative


@dataclass(frozen=True)
class CopyOutcome:
    commit_reveal: bool
    honest_per_stake: tuple[float, ...]  # each honest validator's summed dividends over its stake share
    copier_per_stake: float
    copier_trust: float  # mean validator trust of the copier over the scored epochs
    honest_trust: float  # mean validator trust of the honest validators


def simulate_weight_copier(
    *, commit_reveal: bool, epochs: int = 40, miners: int = 32, honest: int = 3, seed: int = 0,
    params: YumaParams = YumaParams(),
) -> CopyOutcome:
    """Run `epochs` epochs with `honest` honest validators and one copier of equal stake; score the second half."""
    rng = np.random.default_rng(seed)
    quality = rng.lognormal(0.0, 1.0, miners)
    stake = np.ones(honest + 1)
    bonds = None
    sealed: np.ndarray | None = None  # honest weights committed last epoch (revealed and used this epoch)
    public_prev: np.ndarray | None = None  # honest weights revealed last epoch
    dividends = np.zeros(honest + 1)
    trust = np.zeros(honest + 1)
    scored = 0
    for t in range(epochs):
        quality = quality * rng.lognormal(0.0, QUALITY_DRIFT_SIGMA, miners)
        observed = quality[None, :] * rng.lognormal(0.0, OBSERVATION_NOISE_SIGMA, (honest, miners))
        observed /= observed.sum(axis=1, keepdims=True)
        if commit_reveal:
            used_honest = sealed if sealed is not None else observed
            copier = _consensus(public_prev, params.kappa) if public_prev is not None else used_honest.mean(axis=0)
            public_prev, sealed = used_honest, observed
        else:
            used_honest = observed
            copier = _consensus(observed, params.kappa)
        w = np.vstack([used_honest, copier[None, :]])
        result = yuma_epoch(w, stake, bonds, params)
        bonds = result.bonds
        if t >= epochs // 2:
            dividends += result.dividends
            trust += result.validator_trust
            scored += 1
    share = stake / stake.sum()
    per_stake = dividends / share
    return CopyOutcome(commit_reveal, tuple(float(x) for x in per_stake[:honest]), float(per_stake[honest]),
                       float(trust[honest] / scored), float(trust[:honest].mean() / scored))


def _consensus(weights: np.ndarray, kappa: float) -> np.ndarray:
    """The equal-stake consensus of row-normalized weights, as the copier computes it from public weights."""
    stake = np.ones(weights.shape[0])
    return yuma_epoch(weights, stake, None, YumaParams(kappa=kappa)).consensus
