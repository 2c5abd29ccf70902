"""Stage 4: consensus turned into reward lines, payouts and the epoch's link in the hash chain."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ledger import accounts, contributions
from ledger.db import open_ledger
from ledger.digest import digest_text
from protocol.canonical import canonical_json
from ledger.epoch_values import EpochValue
from ledger.unbonding import due_releases
from ledger.settlement import ContributionUpdate, RewardLine, SettleOutcome, Settlement, settle_epoch
from engine.home import Home, utcnow
from engine.stages.consensus import ConsensusOutcome, ValidatorWeights, house_weights_for
from engine.stages.scoring import EpochScores, SubmissionScore


def build_settlement(home: Home, scores: EpochScores, outcome: ConsensusOutcome) -> Settlement:
    """Turn consensus into reward lines whose shares sum to one, and digest every input that produced them."""
    from rewards.backend import to_numpy

    from ledger.governance import tally
    from quality.task_toml import load_tasks
    from engine.parameters import parameters_at, settings_at

    vw, r = outcome.weights, outcome.result
    governed = settings_at(home, vw.epoch)  # the values in force for this epoch (proposals passed before it)
    incentive, dividends = to_numpy(r.incentive), to_numpy(r.dividends)
    consensus, trust, active_stake = to_numpy(r.consensus), to_numpy(r.validator_trust), to_numpy(r.active_stake)
    shares = r.emission  # owner / miners / validators, split by the chain's rule with the governed owner_cut
    house_w = house_weights_for(home, scores)
    with open_ledger(home.paths.ledger, read_only=True) as con:
        auto_stake = accounts.auto_staking(con)
        releases = tuple(due_releases(con, vw.epoch))
        tallies = tally(con, vw.epoch, governed.governance_pass_share)
        parameters = parameters_at(home, vw.epoch, sorted(load_tasks(home.paths.tasks)), con)
        datasets = dataset_ids(con, vw.epoch)
    lines = [RewardLine(account_id="owner", role="owner", share=float(shares.owner), kind="owner_cut")]
    for j, miner in enumerate(vw.miners):
        lines.append(RewardLine(
            account_id=miner, role="contributor", share=float(shares.miners[j]), kind="incentive",
            bucket="staked" if miner in auto_stake else "liquid",
            value=float(scores.values.get(miner, 0.0)), weight=float(house_w.get(miner, 0.0)),
            model_score=float(scores.model_scores.get(miner, 0.0)),
            consensus=float(consensus[j]), incentive=float(incentive[j]), dividends=0.0,
        ))
    for i, validator in enumerate(vw.validators):
        lines.append(RewardLine(
            account_id=validator, role="validator", share=float(shares.validators[i]), kind="dividend",
            bucket="staked", weight=float(active_stake[i]), dividends=float(dividends[i]),
            stake=vw.stake_units[i] if vw.stake_units else int(vw.stake[i]),
            validator_trust=float(trust[i]),
        ))
    bonds = to_numpy(r.bonds)
    row_sums = vw.weights.sum(axis=1, keepdims=True)
    norm_w = np.divide(vw.weights, row_sums, out=np.zeros_like(vw.weights), where=row_sums > 0)
    inputs = {
        "epoch": vw.epoch,
        "scores": scores.inputs,
        "values": sorted([k, v] for k, v in scores.values.items()),
        "model_scores": sorted([k, v] for k, v in scores.model_scores.items()),
        "validators": list(vw.validators),
        "miners": list(vw.miners),
        "weights": vw.weights.tolist(),
        "stake": list(vw.stake_units) if vw.stake_units else vw.stake.tolist(),
        "active": vw.active.tolist(),
        "bonds_prev": outcome.bonds_prev.tolist(),
        "params": outcome.params,
        "emission": governed.epoch_emission_units,
        "owner_cut": governed.owner_cut,
        "releases": [list(r) for r in releases],
        "auto_stake": sorted(m for m in vw.miners if m in auto_stake),
        "tallies": [[t.proposal_id, t.status, t.yes_stake, t.no_stake, t.active_stake] for t in tallies],
        "parameters": [list(p) for p in parameters],
    }
    document = canonical_json(inputs).decode()
    return Settlement(
        epoch=vw.epoch,
        releases=releases,
        inputs_document=document,
        tallies=tallies,
        parameters=parameters,
        inputs_digest=digest_text(document),
        reports=weight_copy_report(home, vw, norm_w),
        emission=governed.epoch_emission_units,
        lines=tuple(lines),
        bonds=tuple((v, m, float(bonds[i, j])) for i, v in enumerate(vw.validators)
                    for j, m in enumerate(vw.miners) if bonds[i, j] > 0),
        weights=tuple((v, m, float(norm_w[i, j])) for i, v in enumerate(vw.validators)
                      for j, m in enumerate(vw.miners) if norm_w[i, j] > 0),
        contributions=tuple(contribution_update(s, s.submission_id in datasets) for s in scores.submissions),
        epoch_values=epoch_values(scores, datasets),
    )


def dataset_ids(con, epoch: int) -> set[str]:
    """The epoch's accepted dataset submissions (the ones the originality rules judge; predictions are scored)."""
    return {s.submission_id for s in contributions.accepted(con, epoch, "dataset")}


def dataset_submission_ids(home: Home, epoch: int) -> set[str]:
    """dataset_ids, read from the home's ledger."""
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return dataset_ids(con, epoch)


def contribution_update(s: SubmissionScore, dataset: bool) -> ContributionUpdate:
    """What settlement writes on a contribution: status, duplicates, value and (datasets) its originality figures."""
    base = ContributionUpdate(s.submission_id, s.status, s.duplicate_rows, s.value, s.duplicate_of)
    if not dataset:
        return base
    return replace(base, judged_rows=s.judged_rows, unoriginal_rows=s.unoriginal_rows, gate_rows=s.gate_rows,
                   originality_p=s.gate_p, median_p=s.median_p, value_without_originality=s.value_without_originality)


def admitted_rows(s: SubmissionScore) -> int:
    """A dataset submission's rows admitted to the valuation game: fresh and original, in a submission the gate
    passed (an unoriginal row is always a fresh one: only fresh rows are judged)."""
    return 0 if s.gated else s.rows - s.duplicate_rows - s.unoriginal_rows


def epoch_values(scores: EpochScores, datasets: set[str]) -> tuple[EpochValue, ...]:
    """Per task scored: what the epoch's rows added to the lake's KNN utility on the holdout, and against what."""
    out = []
    for task, p in sorted(scores.pools.items()):
        admitted = p.get("admitted_rows")
        if admitted is None:
            admitted = sum(admitted_rows(s) for s in scores.submissions
                           if s.task == task and s.submission_id in datasets)
        out.append(EpochValue(task, int(p["prior_rows"]), int(p["new_rows"]), int(admitted), int(p["test_rows"]),
                              float(p["lake_utility"]), float(p["gain"])))
    return tuple(out)


def weight_copy_report(home: Home, vw: ValidatorWeights, norm_w: np.ndarray) -> tuple:
    """Per validator that weighed in: cosine similarity of its weights to the last public consensus, and to its own
    weights of the last epoch it weighed in. A copier tracks the first more closely than the second."""
    from ledger.history import last_own_weights, last_public_consensus

    with open_ledger(home.paths.ledger, read_only=True) as con:
        consensus = last_public_consensus(con, vw.epoch)
        history = last_own_weights(con, vw.epoch)
    col = {m: j for j, m in enumerate(vw.miners)}
    public = np.array([consensus.get(m) or 0.0 for m in vw.miners])
    own: dict[str, np.ndarray] = {}
    for validator, miner, weight in history:
        if miner in col:
            own.setdefault(validator, np.zeros(len(vw.miners)))[col[miner]] = weight
    rows = []
    for i, v in enumerate(vw.validators):
        if vw.active[i] and norm_w[i].any():
            rows.append((v, _cosine(norm_w[i], public), _cosine(norm_w[i], own[v]) if v in own else None))
    return tuple(rows)


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else None


def account_names(home: Home) -> dict[str, str]:
    """account_id -> local name, for reports."""
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return {a.account_id: a.name for a in accounts.all_accounts(con)}


def settle(home: Home, settlement: Settlement) -> SettleOutcome:
    """Write the settlement into the ledger (a no-op if this epoch was settled from the same inputs), under the
    home's epoch lock."""
    from engine.keys import operator_key, signer
    from engine.lock import epoch_lock

    with epoch_lock(home, "settle"), open_ledger(home.paths.ledger) as con:
        return settle_epoch(con, settlement, now=utcnow(), sign=signer(operator_key(home.paths.keys)))
