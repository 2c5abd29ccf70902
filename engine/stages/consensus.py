"""Stage 3: the validators' weights (the house's and the revealed ones) and Yuma Consensus over them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.lake import read_lake_file
from ledger import accounts, market
from ledger.db import open_ledger
from rewards.yuma_chain import ChainEpochResult, EpochState
from engine.home import Home
from engine.stages.ingest import LakeSnapshot, lake_snapshot
from engine.stages.scoring import EpochScores


def house_weights_for(home: Home, scores: EpochScores) -> dict[str, float]:
    """The house validator's weights: data values and model scores mixed by the documented rule."""
    from rewards.house import mixed_house_weights

    from engine.parameters import settings_at

    return mixed_house_weights(scores.values, scores.model_scores, settings_at(home, scores.epoch).prediction_share)


@dataclass(frozen=True)
class ValidatorWeights:
    epoch: int
    validators: tuple[str, ...]  # account ids, rows of W
    miners: tuple[str, ...]  # contributor account ids, columns of W
    weights: np.ndarray  # V x M, raw (Yuma normalizes rows)
    stake: np.ndarray  # V staked units at the epoch's start, as floats for Yuma (ratios only)
    active: np.ndarray  # V bool: submitted weights this epoch (the house always does)
    house: str
    stake_units: tuple[int, ...] = ()  # V staked units at the epoch's start, exact: what the books hold
    miner_registered: tuple[int, ...] = ()  # M epochs in which each contributor registered


def validator_weights(home: Home, scores: EpochScores, snapshot: LakeSnapshot | None = None) -> ValidatorWeights:
    """The house's weights from the measured values, plus each external validator's latest signed weight file.

    The weight files and stakes are the snapshot's (read once for the epoch); without one they are read now."""
    epoch = scores.epoch
    snapshot = snapshot or lake_snapshot(home, epoch)
    assert snapshot.epoch == epoch, "the snapshot must be of the epoch being weighed"
    stakes, weight_subs = dict(snapshot.validator_stakes), snapshot.weights
    with open_ledger(home.paths.ledger, read_only=True) as con:
        all_accounts = accounts.all_accounts(con)
        house = market.house_account_id(con)  # by the id stored at genesis: names are mutable
    contributors = [a for a in all_accounts if a.role == "contributor" and a.registered_epoch <= epoch]
    miners = tuple(a.account_id for a in contributors)
    validators = tuple(sorted(set(stakes) | {house}))
    by_key = {a.public_key: a.account_id for a in all_accounts if a.public_key}
    col = {m: j for j, m in enumerate(miners)}
    row = {v: i for i, v in enumerate(validators)}
    w = np.zeros((len(validators), len(miners)))
    active = np.zeros(len(validators), dtype=bool)
    for account_id, share in house_weights_for(home, scores).items():
        if account_id in col:
            w[row[house], col[account_id]] = share
    active[row[house]] = True
    # With commit-reveal on, the weights of this epoch are those revealed in it (committed in an earlier epoch);
    # otherwise those sent in plain. Commitments themselves carry no weights.
    wanted = "reveal" if home.settings.commit_reveal else "plain"
    latest: dict[str, pa.Table] = {}
    for sub in weight_subs:  # ordered by arrival: a later file replaces an earlier one
        table = read_lake_file(home.path_of(sub.lake_path))
        if table.num_rows and table.column("mode")[0].as_py() == wanted:
            latest[sub.account_id] = table
    for account_id, table in sorted(latest.items()):
        if account_id not in row:
            continue  # no stake at the epoch's start: no say this epoch
        i = row[account_id]
        w[i, :] = 0.0
        for key, value in zip(table.column("miner_key").to_pylist(), table.column("weight").to_pylist()):
            miner = by_key.get(key)
            if miner in col:
                w[i, col[miner]] = float(value)
        # Ingest stores weights bounded and normalized; a lake file from before that rule may hold anything, so a
        # row is made finite, non-negative and scaled by its largest entry (Yuma normalizes it; no sum overflows).
        row_w = np.where(np.isfinite(w[i]) & (w[i] > 0), w[i], 0.0)
        w[i] = row_w / row_w.max() if row_w.max() > 0 else row_w
        active[i] = True
    # Pay once, for what is new: a contributor with nothing new this epoch (no rows that are not duplicates, no scored
    # predictions) gets no weight from anyone. Without this, weights revealed now but scored on last epoch's data
    # (commit-reveal's one-epoch lag) paid a key that turned to re-sending old rows once more.
    may_earn = eligible_miners(scores)
    eligible = np.array([m in may_earn for m in miners], dtype=bool)
    w[:, ~eligible] = 0.0
    stake_units = tuple(int(stakes.get(v, 0)) for v in validators)
    stake = np.array([float(u) for u in stake_units])
    return ValidatorWeights(epoch, validators, miners, w, stake, active, house, stake_units,
                            tuple(a.registered_epoch for a in contributors))


def eligible_miners(scores: EpochScores) -> frozenset[str]:
    """The contributors that may earn this epoch: those with a submission holding rows that are neither duplicates
    nor unoriginal (a submission the originality gate zeroed holds none)."""
    return frozenset(s.account_id for s in scores.submissions
                     if not s.gated and s.rows > s.duplicate_rows + s.unoriginal_rows)


@dataclass(frozen=True)
class ConsensusOutcome:
    weights: ValidatorWeights
    result: ChainEpochResult
    bonds_prev: np.ndarray
    params: dict


def run_consensus(home: Home, vw: ValidatorWeights) -> ConsensusOutcome:
    """Yuma Consensus as the chain runs an epoch (`rewards.yuma_chain.chain_epoch`): permits, activity, weight masks
    and bond hygiene are the chain's rules, applied there; this stage only states the market's epoch in its terms."""
    from rewards.backend import get_xp
    from rewards.consensus import YumaParams, chain_epoch

    from engine.parameters import settings_at

    s = settings_at(home, vw.epoch)  # κ, the bonds' moving average and the owner's cut are governed
    params = YumaParams(
        kappa=s.kappa, bonds_penalty=s.bonds_penalty, bonds_moving_average=s.bonds_moving_average,
        yuma_version=s.yuma_version, liquid_alpha_enabled=s.liquid_alpha_enabled, alpha_low=s.alpha_low,
        alpha_high=s.alpha_high, alpha_sigmoid_steepness=s.alpha_sigmoid_steepness,
        max_allowed_validators=s.max_allowed_validators, storage=s.yuma_storage, sparse_bonds=s.sparse_bonds,
        owner_cut=s.owner_cut,
    )
    bonds_prev = _previous_bonds(home, vw)
    result = chain_epoch(market_epoch_state(vw, bonds_prev), params, xp=get_xp(s.array_backend))
    return ConsensusOutcome(vw, result, bonds_prev, params.__dict__.copy())


def market_epoch_state(vw: ValidatorWeights, bonds_prev: np.ndarray) -> EpochState:
    """The market's epoch as the chain's `EpochState`.

    - Weights are read when the epoch closes, after every registration in it (last_update = epoch + 0.5), so a
      contributor registered in this epoch is weighed; a validator that sent no weights this epoch has none
      (last_update = -inf: inactive).
    - Stake is the stake at the epoch's start; it counts from the epoch after it landed, which is the chain's own
      one-epoch lag, so the permits are this epoch's top-k (validator_permit None).
    - The house is the subnet owner: always permitted, exempt from the stake threshold.
    """
    last_update = np.where(vw.active, vw.epoch + 0.5, -np.inf)
    registered = np.array(vw.miner_registered, dtype=np.float64) if vw.miner_registered else np.zeros(len(vw.miners))
    return EpochState(weights=vw.weights, stake=vw.stake, last_update=last_update, registered_at=registered,
                      epoch=vw.epoch, bonds=bonds_prev, owner_uid=vw.validators.index(vw.house))


def _previous_bonds(home: Home, vw: ValidatorWeights) -> np.ndarray:
    from ledger.history import previous_bonds

    with open_ledger(home.paths.ledger, read_only=True) as con:
        rows = previous_bonds(con, vw.epoch)
    row = {v: i for i, v in enumerate(vw.validators)}
    col = {m: j for j, m in enumerate(vw.miners)}
    bonds = np.zeros((len(vw.validators), len(vw.miners)))
    for validator, miner, bond in rows:
        if validator in row and miner in col:
            bonds[row[validator], col[miner]] = bond
    return bonds
