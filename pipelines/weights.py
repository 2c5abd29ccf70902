"""Validator weight files: plain weights, or commit-reveal (a hash in epoch E, the weights in a later epoch).

Three JSON shapes, told apart by their keys:
- plain  `{"epoch": E, "weights": {contributor_key: w}}`: used in epoch E (only when commit-reveal is off);
- commit `{"epoch": E, "commitment": hex}`: BLAKE2b-256 of the canonical JSON of {epoch, weights, salt};
- reveal `{"epoch": C, "weights": {...}, "salt": hex}`: sent in epoch C+1..C+reveal_epochs, it must match the
  key's commitment of epoch C, and its weights are used in the epoch it arrives in. A weight copier therefore only
  ever copies weights that are at least an epoch old.

Every weight is a number in [0, MAX_WEIGHT]. The commitment is over the weights
as the validator sent them; what is stored (and used) is the vector normalized to sum to 1 (all zero stays all zero),
so no sum or product downstream can overflow or become NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from protocol.canonical import DIGEST_HEX_CHARS, json_digest
from protocol.reasons import COMMIT_REQUIRED, REVEAL_MISMATCH, SCHEMA_MISMATCH, UNKNOWN_KEY, WRONG_EPOCH

SALT_MIN_HEX_CHARS = 32  # 128 bits: a commitment must not be brute-forced back to its weights
MAX_WEIGHT = 1e12  # the largest weight a file may give one key: n of them sum far below float overflow

WEIGHTS_SCHEMA = pa.schema([
    ("validator", pa.string()),  # the validator's public key
    ("miner_key", pa.string()),  # a contributor's public key (null in a commit)
    ("weight", pa.float64()),  # (null in a commit)
    ("mode", pa.string()),  # plain | commit | reveal
    ("commit_epoch", pa.int64()),  # the epoch a commit was made in (commit and reveal rows)
    ("commitment", pa.string()),  # the hash (commit and reveal rows)
])


class WeightsRejected(Exception):
    """A weight file broke a rule; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class WeightRules:
    """What ingest needs to judge weight files in one epoch."""

    epoch: int
    commit_reveal: bool = False
    reveal_epochs: int = 1  # a commitment of epoch C may be revealed in epochs C+1 .. C+reveal_epochs
    commitments: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (validator key, epoch) -> hash


def weights_commitment(epoch: int, weights: Mapping[str, float], salt: str) -> str:
    """The hash a validator commits to: BLAKE2b-256 of the canonical JSON of {epoch, weights, salt}."""
    doc = {"epoch": epoch, "weights": {k: float(v) for k, v in weights.items()}, "salt": salt}
    return json_digest(doc)


def parse_weights(data: bytes, name: str, *, validator_key: str, rules: WeightRules,
                  accounts: Mapping[str, tuple[str, str]]) -> pa.Table:
    """Check a weight file against the rules and return its rows in WEIGHTS_SCHEMA."""

    def bad(rule: str) -> WeightsRejected:
        return WeightsRejected(SCHEMA_MISMATCH, f"{name}: {rule}")

    def no_constants(c: str) -> float:
        raise bad(f"weights must be finite numbers, found {c}")

    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"not valid UTF-8 JSON ({e})") from None
    shapes = ({"epoch", "weights"}, {"epoch", "commitment"}, {"epoch", "weights", "salt"})
    if not isinstance(doc, dict) or set(doc) not in shapes:
        raise bad('must be a JSON object with the keys "epoch" and "weights" (plain), "epoch" and "commitment" '
                  '(commit), or "epoch", "weights" and "salt" (reveal)')
    e = doc["epoch"]
    if not isinstance(e, int) or isinstance(e, bool):
        raise bad("field 'epoch': must be an integer")
    if "commitment" in doc:
        return _commit(doc, e, name, validator_key, rules)
    weights = _check_weights(doc["weights"], name, accounts)
    if "salt" in doc:
        return _reveal(doc, e, weights, name, validator_key, rules)
    if rules.commit_reveal:
        raise WeightsRejected(COMMIT_REQUIRED, f"{name}: commit-reveal is on: commit a hash of these weights in "
                                                 f"epoch {rules.epoch} (`tributary commit`) and reveal them in the next")
    if e != rules.epoch:
        raise WeightsRejected(WRONG_EPOCH, f"{name}: field 'epoch': weights are for epoch {e}, "
                                             f"this run ingests epoch {rules.epoch}")
    return _rows(validator_key, weights, "plain", None, None)


def _commit(doc: dict, e: int, name: str, validator_key: str, rules: WeightRules) -> pa.Table:
    if e != rules.epoch:
        raise WeightsRejected(WRONG_EPOCH, f"{name}: field 'epoch': a commitment is for the epoch it is sent in "
                                             f"({rules.epoch}), not {e}")
    c = doc["commitment"]
    if not isinstance(c, str) or len(c) != DIGEST_HEX_CHARS or any(ch not in "0123456789abcdef" for ch in c):
        raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'commitment': must be 64 lowercase hex digits "
                                                 "(BLAKE2b-256)")
    return pa.Table.from_pylist([{"validator": validator_key, "miner_key": None, "weight": None, "mode": "commit",
                                  "commit_epoch": e, "commitment": c}], schema=WEIGHTS_SCHEMA)


def _reveal(doc: dict, e: int, weights: dict, name: str, validator_key: str, rules: WeightRules) -> pa.Table:
    salt = doc["salt"]
    if not isinstance(salt, str) or len(salt) < SALT_MIN_HEX_CHARS:
        raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'salt': must be a string of at least "
                                                 f"{SALT_MIN_HEX_CHARS} hex digits")
    if not rules.epoch - rules.reveal_epochs <= e < rules.epoch:
        raise WeightsRejected(WRONG_EPOCH, f"{name}: field 'epoch': a commitment of epoch {e} can be revealed in "
                                             f"epochs {e + 1}..{e + rules.reveal_epochs}, not {rules.epoch}")
    committed = rules.commitments.get((validator_key, e))
    digest = weights_commitment(e, weights, salt)
    if committed is None:
        raise WeightsRejected(REVEAL_MISMATCH, f"{name}: no commitment from this key in epoch {e} to reveal")
    if committed != digest:
        raise WeightsRejected(REVEAL_MISMATCH, f"{name}: these weights and salt hash to {digest[:16]}…, but the "
                                                 f"commitment of epoch {e} is {committed[:16]}…")
    return _rows(validator_key, weights, "reveal", e, committed)


def _check_weights(w: object, name: str, accounts: Mapping[str, tuple[str, str]]) -> dict:
    if not isinstance(w, dict) or not w:
        raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'weights': must be a non-empty object of "
                                                 "public_key_hex: weight")
    check_weight_values(w, name)
    for key in sorted(w):
        acct = accounts.get(key)
        if acct is None or acct[1] != "contributor":
            raise WeightsRejected(UNKNOWN_KEY, f"{name}: weights name key {key}, which is not registered as a "
                                                 "contributor")
    return w


def check_weight_values(w: Mapping[str, object], name: str) -> None:
    """Each weight a number (not a bool) in [0, MAX_WEIGHT]; WeightsRejected(SCHEMA_MISMATCH) names file, key, rule.

    Checked before anything converts a value to float, so a 400-digit integer is refused, not an OverflowError.
    """
    for key, value in w.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'weights': weight for {key}: must be a number, "
                                                     f"found {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'weights': weight for {key}: must be finite, "
                                                     f"found {value}")
        if value < 0:
            raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'weights': weight for {key}: must be "
                                                     f"non-negative, found {_show(value)}")
        if value > MAX_WEIGHT:
            raise WeightsRejected(SCHEMA_MISMATCH, f"{name}: field 'weights': weight for {key}: must be at most "
                                                     f"MAX_WEIGHT = {MAX_WEIGHT:g}, found {_show(value)} (weights "
                                                     "are relative: scale the vector down)")


def _show(value: int | float) -> str:
    """A number for a message, short even for a 4,000-digit integer."""
    if isinstance(value, float) or abs(value) < 10**15:
        return f"{value:.6g}"
    return f"an integer of {value.bit_length()} bits"


def normalized(weights: Mapping[str, int | float]) -> dict[str, float]:
    """Checked weights over their sum (math.fsum, exact enough on values <= MAX_WEIGHT); all zero stays all zero."""
    values = {k: float(v) + 0.0 for k, v in sorted(weights.items())}  # + 0.0: a -0.0 is stored as 0.0
    total = math.fsum(values.values())
    if total == 0.0:
        return {k: 0.0 for k in values}
    return {k: v / total for k, v in values.items()}


def _rows(validator_key: str, weights: dict, mode: str, commit_epoch: int | None, commitment: str | None) -> pa.Table:
    """The stored rows: the weights normalized to sum to 1 (the commitment, if any, is over the raw ones)."""
    share = normalized(weights)
    keys = sorted(share)
    n = len(keys)
    return pa.table({
        "validator": pa.array([validator_key] * n, pa.string()),
        "miner_key": pa.array(keys, pa.string()),
        "weight": pa.array([share[k] for k in keys], pa.float64()),
        "mode": pa.array([mode] * n, pa.string()),
        "commit_epoch": pa.array([commit_epoch] * n, pa.int64()),
        "commitment": pa.array([commitment] * n, pa.string()),
    }, schema=WEIGHTS_SCHEMA)
