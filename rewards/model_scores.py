"""Scores for model contributions: predicted class probabilities on a task's challenge rows, against hidden labels.

A model earns for what it adds: its log-loss improvement over the label prior, times its uniqueness: the share of
its useful signal (what covaries with the truth) that is orthogonal to the stake-weighted meta-prediction of the
other models, in the spirit of Numerai's MMC. A copy of the crowd has no unique useful signal, so it earns about 0;
a constant prior improves on nothing; noise is unique but not useful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROBABILITY_FLOOR = 1e-15  # log-loss clips probabilities here, as scikit-learn does


@dataclass(frozen=True)
class ModelScore:
    improvement: float  # log-loss of the prior minus the model's, nats per row (> 0: better than the prior)
    mmc: float  # covariance with the truth of the model's signal orthogonal to the others' meta-prediction
    uniqueness: float  # mmc over the covariance of the whole signal with the truth, clipped to [0, 1]
    score: float  # max(0, improvement) * uniqueness


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (labels are column indices)."""
    p = np.clip(probs[np.arange(len(labels)), labels], PROBABILITY_FLOOR, 1.0)
    return float(-np.mean(np.log(p)))


def score_models(
    predictions: Sequence[np.ndarray], stakes: Sequence[float], labels: np.ndarray, n_classes: int
) -> list[ModelScore]:
    """Score each model (rows x classes probabilities, rows aligned with `labels`) against the others' meta-model.

    The meta-prediction that model m is compared with leaves m out, weighted by the others' stake (equal weights
    where no one has stake), so a copy cannot hide in an ensemble that contains itself.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    prior = onehot.mean(axis=0, keepdims=True)
    prior_loss = log_loss(np.repeat(prior, n, axis=0), labels)
    target = (onehot - prior).ravel()
    probs = [np.asarray(p, dtype=np.float64) for p in predictions]
    for p in probs:
        assert p.shape == (n, n_classes), "predictions must be rows x classes, aligned with the labels"
    weights = np.asarray(stakes, dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones(len(probs))
    scores = []
    for m, p in enumerate(probs):
        signal = (p - prior).ravel()
        others = [i for i in range(len(probs)) if i != m]
        w = weights[others]
        if not others:
            meta = np.zeros_like(signal)
        elif w.sum() <= 0:
            meta = np.mean([probs[i] - prior for i in others], axis=0).ravel()
        else:
            meta = (np.tensordot(w, np.stack([probs[i] for i in others]), axes=1) / w.sum() - prior).ravel()
        improvement = prior_loss - log_loss(p, labels)
        mmc = _cov(signal - _projection(signal, meta), target)
        useful = _cov(signal, target)
        uniqueness = min(1.0, max(0.0, mmc / useful)) if useful > 0 else 0.0
        scores.append(ModelScore(improvement, mmc, uniqueness, max(0.0, improvement) * uniqueness))
    return scores


def _cov(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a - a.mean(), b - b.mean()) / len(a))


def _projection(a: np.ndarray, onto: np.ndarray) -> np.ndarray:
    denom = float(np.dot(onto, onto))
    return onto * (float(np.dot(a, onto)) / denom) if denom > 0 else np.zeros_like(a)
