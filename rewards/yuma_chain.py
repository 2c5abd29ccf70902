"""The chain's epoch around the Yuma core: stake threshold, permits, activity, weight masks, bond hygiene, emission.

This follows subtensor's production sparse path (`epoch_mechanism`, ../shared/reference/yuma.md section 1) with
two differences of representation, not of rule:
- Validators (rows) and miners (columns) are separate axes. On chain both live in one uid space; `validator_uids`
  and `miner_uids` place each row and column in that space, which is what self-weights, the owner and the permit
  tie rule need. To replay the chain's square n x n matrices, pass both as range(n).
- Time is counted in epochs, not blocks: `last_update`, `registered_at`, `commit_epoch` and the activity cutoff are
  epoch indices, and the chain's comparisons are kept as they are (a weight set in the epoch a miner registered in
  is dropped, as `last_update <= block_at_registration` drops it on chain).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rewards.backend import get_xp, to_numpy
from rewards.emission import EmissionShares, emission_shares
from rewards.yuma_core import (
    U16_MAX,
    YumaParams,
    row_normalize,
    check_matrix,
    epoch_core,
    u16_bonds,
    u16_weights,
)


@dataclass(frozen=True)
class EpochState:
    """What the chain reads from storage for one epoch of one subnet (step 0), on V validator rows x M miner columns.

    weights and bonds are V x M; stake, last_update, validator_permit, validator_uids and commit_epoch have one entry
    per validator; registered_at and miner_uids one per miner. Only weights, stake, last_update, registered_at and
    epoch are required.
    """

    weights: Any  # raw weights as set: non-negative, any row scale (rows are normalized; u16 storage upscales them)
    stake: Any  # raw stake per validator, any unit (the stake threshold is in the same unit)
    last_update: Any  # epoch in which each validator last set weights
    registered_at: Any  # epoch in which each miner was (re)registered
    epoch: int  # the epoch being run
    bonds: Any = None  # bonds stored by the previous epoch (ChainEpochResult.bonds); None: none yet
    validator_permit: Any = None  # permits stored by the previous epoch; None: this epoch's top-k, as if unchanged
    # (then the stored bond rows of validators without one are taken as cleared, as the previous epoch stored them)
    last_epoch: int | None = None  # last epoch that ran (None: epoch - 1); miners registered after it lose bonds
    validator_uids: Any = None  # uid of each row (None: 0..V-1)
    miner_uids: Any = None  # uid of each column (None: V..V+M-1, so no validator weighs itself)
    owner_uid: int | None = None  # the subnet owner's uid: always permitted, keeps its self-weight, no threshold
    commit_epoch: Any = None  # commit-reveal: epoch of each validator's oldest unexpired commit, negative for none


@dataclass(frozen=True)
class ChainEpochResult:
    """One chain epoch's outputs as NumPy arrays; carry bonds and validator_permit into the next EpochState."""

    consensus: np.ndarray  # M
    incentive: np.ndarray  # M
    dividends: np.ndarray  # V
    validator_trust: np.ndarray  # V
    bonds: np.ndarray  # V x M as stored: rows without a new permit cleared; k/65535 with storage="u16"
    stake: np.ndarray  # V, normalized stake after the threshold (the chain's StakeWeight)
    active_stake: np.ndarray  # V, stake of active validators with a permit, normalized
    active: np.ndarray  # V bool
    validator_permit: np.ndarray  # V bool, the new permits (used for masking next epoch)
    clipped_weights: np.ndarray  # V x M, masked, row-normalized weights clipped at consensus
    emission: EmissionShares  # owner / miners / validators fractions of the epoch's emission
    bonds_u16: np.ndarray | None = None  # V x M uint16 as stored on chain; only with storage="u16"

    def stored(self) -> dict[str, np.ndarray]:
        """The u16 values the chain stores, by storage name: floor(65535 x) for fractions, and the bonds if known."""
        out = {name: fixed_proportion_to_u16(getattr(self, field)) for name, field in (
            ("Consensus", "consensus"), ("Incentive", "incentive"), ("Dividends", "dividends"),
            ("ValidatorTrust", "validator_trust"), ("StakeWeight", "stake"))}
        if self.bonds_u16 is not None:
            out["Bonds"] = self.bonds_u16
        return out


def fixed_proportion_to_u16(x: Any) -> np.ndarray:
    """floor(65535 x) as uint16: how the chain stores a fraction in [0, 1]."""
    return np.clip(np.floor(np.asarray(to_numpy(x), dtype=np.float64) * U16_MAX), 0, U16_MAX).astype(np.uint16)


def validator_permits(stake: Any, k: int, uids: Any = None, owner_row: int | None = None) -> np.ndarray:
    """Step 3: permits for the k largest non-zero stakes, plus the owner's row.

    The chain sorts all uids by stake with a stable ascending sort and drops the first n - k, so at a tie on the
    boundary the lower uid loses its permit. `uids` gives each row's uid (None: the row index).
    """
    s = np.asarray(to_numpy(stake), dtype=np.float64)
    uid = np.arange(s.size) if uids is None else np.asarray(to_numpy(uids))
    permit = s != 0
    if np.count_nonzero(permit) > k:
        ranked = np.lexsort((uid, s))  # ascending by stake, then by uid
        permit[ranked[: s.size - k]] = False
    if owner_row is not None:
        permit[owner_row] = True
    return permit


def _vector(name: str, value: Any, size: int, dtype: Any) -> np.ndarray:
    """A 1-D NumPy copy of `value` with `size` entries, or ValueError naming the field."""
    a = np.array(to_numpy(value), dtype=dtype)
    if a.shape != (size,):
        raise ValueError(f"{name} must have {size} entries, got shape {a.shape}")
    return a


def _uid_axes(state: EpochState, n_val: int, n_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Validator and miner uids (defaults: disjoint ranges), checked to be unique on each axis."""
    v_uids = np.arange(n_val) if state.validator_uids is None else _vector(
        "validator_uids", state.validator_uids, n_val, np.int64)
    m_uids = np.arange(n_val, n_val + n_min) if state.miner_uids is None else _vector(
        "miner_uids", state.miner_uids, n_min, np.int64)
    for name, uids in (("validator_uids", v_uids), ("miner_uids", m_uids)):
        if np.unique(uids).size != uids.size:
            raise ValueError(f"{name} must be unique")
    return v_uids, m_uids


def _weight_masks(xp: Any, permit: np.ndarray, v_uids: np.ndarray, m_uids: np.ndarray, owner_uid: int | None,
                  last_update: np.ndarray, registered_at: np.ndarray,
                  commit_epoch: np.ndarray | None) -> list[Callable[[Any], None]]:
    """Steps 5b-5e as in-place edits of a V x M weight matrix: rows without a permit, self-weights but the owner's,
    weights set before a miner's registration, and (commit-reveal) weights whose pending commit predates it.

    Only the edits that change something are returned, so an epoch with none can skip copying the weights.
    """
    edits: list[Callable[[Any], None]] = []
    if not permit.all():
        edits.append(functools.partial(_zero, (xp.asarray(np.flatnonzero(~permit)),)))
    # Self-weights: rows and columns that carry the same uid.
    sorter = np.argsort(m_uids)
    pos = np.minimum(np.searchsorted(m_uids, v_uids, sorter=sorter), m_uids.size - 1)
    is_self = m_uids[sorter[pos]] == v_uids
    if owner_uid is not None:
        is_self &= v_uids != owner_uid
    self_rows = np.flatnonzero(is_self)
    if self_rows.size:
        edits.append(functools.partial(_zero, (xp.asarray(self_rows), xp.asarray(sorter[pos[self_rows]]))))
    # A weight at (i, j) is dropped when marker_i <= registered_j (< for commits); only columns registered at or
    # after the smallest marker can be hit, which keeps this to the recently registered miners.
    markers = [(last_update, False)]
    if commit_epoch is not None and (commit_epoch >= 0).any():
        markers.append((np.where(commit_epoch >= 0, commit_epoch, np.inf), True))
    for marker, strict in markers:
        cols = np.flatnonzero(registered_at >= marker.min())
        reg = registered_at[cols][None, :]
        drop = marker[:, None] < reg if strict else marker[:, None] <= reg
        if drop.any():
            edits.append(functools.partial(_drop_block, xp.asarray(cols), xp.asarray(drop)))
    return edits


def _zero(index: tuple, w: Any) -> None:
    """Zero w[index] in place (whole rows, or (row, column) pairs)."""
    w[index] = 0.0


def _drop_block(cols: Any, drop: Any, w: Any) -> None:
    """Zero w[:, cols][drop] in place."""
    block = w[:, cols]
    block[drop] = 0.0
    w[:, cols] = block


def chain_epoch(state: EpochState, params: YumaParams, *, xp: Any = None) -> ChainEpochResult:
    """Run one epoch as the chain does (yuma.md section 1, steps 1-12): masks, then the Yuma core, then storage.

    Permits used for masking are the previous epoch's (state.validator_permit); the new ones are returned, and
    bond rows of validators without a new permit are cleared, as the chain stores them. With storage="u16" the
    weights are max-upscaled to u16 per row as set_weights stores them and the bonds come back as stored (floor).
    """
    xp = get_xp() if xp is None else xp
    p = params
    w_in = xp.asarray(state.weights, dtype=xp.float64)
    if w_in.ndim != 2:
        raise ValueError(f"weights must be a V x M matrix, got shape {tuple(w_in.shape)}")
    n_val, n_min = w_in.shape
    check_matrix(xp, "weights", w_in)
    raw = _vector("stake", state.stake, n_val, np.float64)
    check_matrix(np, "stake", raw)
    last_update = _vector("last_update", state.last_update, n_val, np.float64)
    registered_at = _vector("registered_at", state.registered_at, n_min, np.float64)
    commit_epoch = None if state.commit_epoch is None else _vector(
        "commit_epoch", state.commit_epoch, n_val, np.float64)
    v_uids, m_uids = _uid_axes(state, n_val, n_min)
    owner_rows = np.flatnonzero(v_uids == state.owner_uid) if state.owner_uid is not None else np.array([], int)
    owner_row = int(owner_rows[0]) if owner_rows.size else None

    # Step 2: stake below the threshold counts as zero, except the owner's.
    below = raw < p.stake_threshold
    if owner_row is not None:
        below[owner_row] = False
    raw[below] = 0.0
    stake = raw / raw.sum() if raw.sum() > 0 else raw
    # Step 3: new permits from this stake; this epoch masks with the previous ones (the owner's always holds).
    new_permit = validator_permits(stake, int(p.max_allowed_validators), v_uids, owner_row)
    permits_unchanged = state.validator_permit is None
    if permits_unchanged:
        permit = new_permit.copy()
    else:
        permit = _vector("validator_permit", state.validator_permit, n_val, bool)
        if owner_row is not None:
            permit[owner_row] = True
    # Steps 1 and 4.
    active = ~(last_update + p.activity_cutoff < state.epoch)
    active_stake = stake * (active & permit)
    if active_stake.sum() > 0:
        active_stake /= active_stake.sum()

    # Step 5: stored weights, masked, then row-normalized (into a new array the core may overwrite).
    edits = _weight_masks(xp, permit, v_uids, m_uids, state.owner_uid, last_update, registered_at,
                          commit_epoch) if n_val and n_min else []
    w = u16_weights(xp, w_in) if p.storage == "u16" else w_in
    if edits and w is w_in:
        w = xp.array(w_in, copy=True)
    for edit in edits:
        edit(w)
    if w is w_in:
        sums = xp.sum(w_in, axis=1, keepdims=True)
        w = w_in / xp.where(sums > 0, sums, 1.0)
    else:
        row_normalize(xp, w)

    # Step 11 input: stored bonds, with the columns of miners registered since the last epoch cleared.
    b_prev = None
    if state.bonds is not None:
        b_prev = xp.asarray(state.bonds, dtype=xp.float64)
        if b_prev.shape != (n_val, n_min):
            raise ValueError(f"bonds must have the weights' shape {(n_val, n_min)}, got {tuple(b_prev.shape)}")
        check_matrix(xp, "bonds", b_prev, upper=1.0 if p.yuma_version == "yuma3" else np.inf)
        last_epoch = state.epoch - 1 if state.last_epoch is None else state.last_epoch
        fresh = np.flatnonzero(registered_at > last_epoch)
        if fresh.size:
            b_prev = xp.array(b_prev, copy=True)
            b_prev[:, xp.asarray(fresh)] = 0.0
        if permits_unchanged and not permit.all():
            # The previous epoch stored these permits too, and cleared the bond rows of those it denied (below).
            b_prev = xp.array(b_prev, copy=True)
            b_prev[xp.asarray(np.flatnonzero(~permit))] = 0.0

    s = xp.asarray(active_stake)
    if n_val and n_min:
        out = epoch_core(xp, w, s, b_prev, p)
        consensus, incentive, dividends = out.consensus, out.incentive, out.dividends
        trust, bonds, clipped = out.validator_trust, out.bonds, out.clipped_weights
    else:
        consensus = incentive = xp.zeros(n_min, dtype=xp.float64)
        dividends = trust = xp.zeros(n_val, dtype=xp.float64)
        bonds = clipped = xp.zeros((n_val, n_min), dtype=xp.float64)
    bonds_u16 = None
    if p.storage == "u16":
        bonds = u16_bonds(xp, bonds, p.yuma_version)
    if not new_permit.all():
        bonds[xp.asarray(np.flatnonzero(~new_permit))] = 0.0
    if p.storage == "u16":
        bonds_u16 = to_numpy(bonds).astype(np.uint16)
        bonds /= U16_MAX

    # Step 12: with no surviving weight (e = 0) validators share by active stake, or by stake if none is active.
    incentive_np, dividends_np = to_numpy(incentive), to_numpy(dividends)
    fallback = active_stake if active_stake.sum() > 0 else stake
    shares = emission_shares(incentive_np, dividends_np, fallback, owner_cut=p.owner_cut)
    return ChainEpochResult(
        consensus=to_numpy(consensus),
        incentive=incentive_np,
        dividends=dividends_np,
        validator_trust=to_numpy(trust),
        bonds=to_numpy(bonds),
        stake=stake,
        active_stake=active_stake,
        active=active,
        validator_permit=new_permit,
        clipped_weights=to_numpy(clipped),
        emission=shares,
        bonds_u16=bonds_u16,
    )
