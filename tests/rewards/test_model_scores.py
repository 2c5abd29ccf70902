"""Model contributions: honest independent models earn, a copy of the crowd and a constant prior earn about 0."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.model_scores import log_loss, score_models


@pytest.fixture(scope="module")
def models():
    """Four honest models trained on disjoint halves/feature views of sklearn's bundled digits, scored on held-out rows."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    d = load_digits()
    rng = np.random.default_rng(3)
    order = rng.permutation(len(d.target))
    x, y = d.data[order], d.target[order]
    train, test = slice(0, 1200), slice(1200, None)
    honest = [
        LogisticRegression(max_iter=1000).fit(x[train][:, :32] / 16, y[train]).predict_proba(x[test][:, :32] / 16),
        RandomForestClassifier(60, random_state=0).fit(x[train][:, 32:], y[train]).predict_proba(x[test][:, 32:]),
        KNeighborsClassifier(7).fit(x[train], y[train]).predict_proba(x[test]),
    ]
    return honest, y[test]


def _scores(preds, labels, stakes=None):
    return score_models(preds, stakes or [1.0] * len(preds), labels, 10)


def test_log_loss_matches_its_definition():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert log_loss(probs, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2, abs=1e-15)


def test_copy_of_the_crowd_earns_about_nothing(models):
    honest, labels = models
    copy = np.mean(honest, axis=0)  # the equal-stake meta-prediction of the honest models
    scores = _scores([*honest, copy], labels)
    assert scores[-1].score == pytest.approx(0.0, abs=1e-9)
    assert scores[-1].uniqueness == pytest.approx(0.0, abs=1e-9)
    assert scores[-1].improvement > 1.0  # it predicts well; it just adds nothing the crowd lacks
    assert min(s.score for s in scores[:-1]) > 0.005  # each honest model keeps some unique useful signal
    assert all(s.improvement > 0.5 for s in scores[:-1])


def test_constant_prior_earns_nothing_and_noise_earns_less(models):
    honest, labels = models
    prior = np.bincount(labels, minlength=10) / len(labels)
    constant = np.repeat(prior[None, :], len(labels), axis=0)
    rng = np.random.default_rng(0)
    noisy = np.clip(honest[0] + rng.normal(0, 0.3, honest[0].shape), 1e-3, None)
    noisy /= noisy.sum(axis=1, keepdims=True)
    scores = _scores([*honest, constant, noisy], labels)
    assert scores[3].score == pytest.approx(0.0, abs=1e-9) and scores[3].improvement == pytest.approx(0.0, abs=1e-12)
    assert scores[4].score < min(s.score for s in scores[:3])


def test_stake_weights_the_meta_prediction(models):
    honest, labels = models
    # Copying the big-stake model: the meta the copy is compared with is dominated by that model.
    copy = honest[0].copy()
    heavy = _scores([*honest, copy], labels, stakes=[100.0, 1.0, 1.0, 0.0])
    assert heavy[-1].uniqueness < 0.05
    assert heavy[-1].score < 0.1 * heavy[1].score
