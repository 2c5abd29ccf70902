"""One epoch, stage by stage: ingest → score → weights → consensus → settle.

The CLI (`tributary epoch run`) and the Dagster assets call these same functions; each stage takes the previous
stage's value, so either driver can run them in one process or hand them between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ledger import accounts, contributions, transfers
from ledger.contributions import ContributionRecord
from ledger.db import open_ledger, transaction
from ledger.digest import digest
from ledger.epochs import current_epoch
from ledger.settlement import ContributionUpdate, RewardLine, SettleOutcome, Settlement, settle_epoch
from quality.task import Task, load_tasks
from tributary.home import Home, utcnow

WEIGHTS_TASK_DIR = "task=_weights"


# ---------------------------------------------------------------------------------------------------- ingest
@dataclass(frozen=True)
class IngestSummary:
    epoch: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    rows: int


def ingest(home: Home) -> IngestSummary:
    """Run the Beam ingest over the drop folder into the open epoch and record what it decided."""
    from pipelines.ingest import Registry, run_ingest  # Beam is imported only when ingest runs
    from quality.schema import cast_predictions, cast_to_task
    from quality.suite import validate

    paths = home.paths
    tasks = load_tasks(paths.tasks)
    with open_ledger(paths.ledger) as con:
        epoch = current_epoch(con)
        registry = Registry(
            accounts={a.public_key: (a.account_id, a.role) for a in accounts.all_accounts(con) if a.public_key},
            last_nonce=contributions.last_nonces(con),
            tasks=tasks,
            commit_reveal=home.settings.commit_reveal,
            reveal_epochs=home.settings.reveal_epochs,
            commitments=contributions.open_commitments(con, epoch, home.settings.reveal_epochs),
        )
    result = run_ingest(
        drop=paths.drop, lake=paths.lake, archive=paths.archive, quarantine=paths.quarantine, epoch=epoch,
        registry=registry, cast=cast_to_task, gate=validate, max_payload_bytes=home.settings.max_payload_bytes,
        pipeline_args=list(home.settings.beam_pipeline_args), cast_predictions=cast_predictions,
        gate_predictions=PredictionsGate({
            name: tuple(_challenge(home, t).column("row_id").to_pylist()) for name, t in tasks.items() if t.challenge
        }),
    )
    records = [
        ContributionRecord(
            submission_id=a.submission_id, epoch=epoch, account_id=a.account_id, public_key=a.public_key, task=a.task,
            kind=a.kind, rows=a.rows, status="accepted", reason=None, digest=a.digest, nonce=a.nonce, file=a.file,
            received_at=a.received_at, lake_path=_relative(a.lake_path, paths.root),
        )
        for a in result.accepted
    ] + [
        ContributionRecord(
            submission_id=r.submission_id, epoch=epoch, account_id=r.account_id, public_key=r.public_key, task=r.task,
            kind=r.kind, rows=None, status="quarantined", reason=r.reason, digest=None, nonce=r.nonce, file=r.file,
            received_at=r.received_at, detail=r.detail,
        )
        for r in result.rejected
    ]
    commits = [(epoch, a.account_id, _commitment_of(paths.root / a.lake_path), a.submission_id)
               for a in result.accepted if a.kind == "weights"]
    with open_ledger(paths.ledger) as con, transaction(con):
        contributions.record(con, records)
        contributions.record_commitments(con, [c for c in commits if c[2] is not None])
    reasons: dict[str, int] = {}
    for r in result.rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return IngestSummary(epoch, len(result.accepted), len(result.rejected), reasons, sum(a.rows for a in result.accepted))


def _commitment_of(lake_file: Path) -> str | None:
    """The hash in a landed weight file if it is a commitment, else None."""
    table = pq.read_table(lake_file, columns=["mode", "commitment"])
    return table.column("commitment")[0].as_py() if table.column("mode")[0].as_py() == "commit" else None


@dataclass(frozen=True)
class PredictionsGate:
    """The quality gate for predictions: the task's GX predictions suite over its challenge row ids (picklable)."""

    challenge_ids: dict[str, tuple[int, ...]]

    def __call__(self, table: pa.Table, task: Task):
        from quality.suite import validate_predictions

        return validate_predictions(table, task, self.challenge_ids[task.name])


def _challenge(home: Home, task: Task) -> pa.Table:
    return pq.read_table(_home_path(home, task.challenge))


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_absolute() and p.is_relative_to(root) else str(p)


# ---------------------------------------------------------------------------------------------------- lake
@dataclass(frozen=True)
class LakeSubmission:
    submission_id: str
    account_id: str
    task: str
    rows: int
    lake_path: str


@dataclass(frozen=True)
class LakeSnapshot:
    """The epoch's accepted dataset submissions as they sit in the lake."""

    epoch: int
    submissions: tuple[LakeSubmission, ...]


def lake_snapshot(home: Home, epoch: int) -> LakeSnapshot:
    """List the epoch's landed dataset submissions, in arrival order."""
    with open_ledger(home.paths.ledger, read_only=True) as con:
        rows = con.execute(
            "SELECT submission_id, account_id, task, rows, lake_path FROM contributions "
            "WHERE epoch = ? AND kind = 'dataset' AND status <> 'quarantined' ORDER BY received_at, submission_id",
            [epoch],
        ).fetchall()
    return LakeSnapshot(epoch, tuple(LakeSubmission(*r) for r in rows))


def revalidate(home: Home, snapshot: LakeSnapshot) -> list[tuple[str, object]]:
    """Run each landed submission's task suite again on its lake file: (submission_id, quality Report)."""
    from quality.suite import validate

    tasks = load_tasks(home.paths.tasks)
    reports = []
    for sub in snapshot.submissions:
        task = tasks[sub.task]
        table = pq.read_table(home.root / sub.lake_path, columns=task.columns())
        reports.append((sub.submission_id, validate(table, task)))
    return reports


# ---------------------------------------------------------------------------------------------------- score
@dataclass(frozen=True)
class SubmissionScore:
    submission_id: str
    account_id: str
    task: str
    rows: int
    duplicate_rows: int
    value: float

    @property
    def status(self) -> str:
        return "duplicate" if self.rows and self.duplicate_rows == self.rows else "accepted"


@dataclass(frozen=True)
class EpochScores:
    epoch: int
    submissions: tuple[SubmissionScore, ...]
    values: dict[str, float]  # account_id -> summed data value over its rows and tasks
    inputs: dict = field(default_factory=dict)  # what the scores were computed from, for the inputs digest
    model_scores: dict[str, float] = field(default_factory=dict)  # account_id -> summed prediction score


def score(home: Home, epoch: int | None = None) -> EpochScores:
    """Value every accepted dataset row of the epoch with exact KNN-Shapley against each task's holdout.

    A row already in the lake (an earlier epoch, or an earlier submission this epoch) is a duplicate and earns
    nothing: only its first submitter is paid for it.
    """
    from rewards.duplicates import first_seen_mask, near_duplicate_mask
    from rewards.valuation import knn_shapley

    paths = home.paths
    with open_ledger(paths.ledger, read_only=True) as con:
        epoch = current_epoch(con) if epoch is None else epoch
        subs = contributions.accepted(con, epoch, "dataset")
    tasks = load_tasks(paths.tasks)
    scores: list[SubmissionScore] = []
    values: dict[str, float] = {}
    inputs: list = []
    for task_name in sorted({s[2] for s in subs}):
        task = tasks[task_name]
        task_subs = [s for s in subs if s[2] == task_name]
        tables = [pq.read_table(paths.root / s[3]) for s in task_subs]
        pool = pa.concat_tables(tables) if tables else None
        prior = prior_rows(paths.lake, epoch, task)
        x = _features(pool, task)
        fresh = first_seen_mask(pool.column("_row_hash").to_numpy(), prior.column("_row_hash").to_numpy())
        fresh &= ~near_duplicate_mask(
            x, pool.column("_contributor").to_numpy(zero_copy_only=False), _features(prior, task),
            prior.column("_contributor").to_numpy(zero_copy_only=False),
            scale=np.array([f.max - f.min for f in task.features]), tol=task.near_duplicate_tol,
        )
        y = pool.column(task.label).to_numpy(zero_copy_only=False)
        holdout = pq.read_table(_holdout_path(home, task))
        row_values = np.zeros(pool.num_rows)
        if fresh.any():
            row_values[fresh] = knn_shapley(
                x[fresh], y[fresh], _features(holdout, task), holdout.column(task.label).to_numpy(zero_copy_only=False),
                k=task.k,
            )
        start = 0
        for (submission_id, account_id, _, lake_path, _), table in zip(task_subs, tables):
            stop = start + table.num_rows
            value = float(np.sum(row_values[start:stop]))
            dup = int(np.count_nonzero(~fresh[start:stop]))
            scores.append(SubmissionScore(submission_id, account_id, task_name, table.num_rows, dup, value))
            values[account_id] = values.get(account_id, 0.0) + value
            inputs.append([submission_id, account_id, task_name, lake_path])
            start = stop
    model_scores, prediction_scores = score_predictions(home, epoch, tasks)
    scores.extend(prediction_scores)
    inputs.extend([s.submission_id, s.account_id, s.task, "predictions"] for s in prediction_scores)
    return EpochScores(epoch, tuple(scores), values, {"submissions": inputs}, model_scores)


def score_predictions(home: Home, epoch: int, tasks: dict[str, Task]) -> tuple[dict[str, float], list[SubmissionScore]]:
    """Score the epoch's predictions on each task's challenge against the hidden labels (rewards.model_scores).

    A contributor's latest predictions for a task in the epoch count; earlier ones score 0. The meta-model weighs
    each contributor by its stake at the epoch's start (equal weights when nobody has stake).
    """
    from rewards.model_scores import score_models

    with open_ledger(home.paths.ledger, read_only=True) as con:
        subs = contributions.accepted(con, epoch, "predictions")
        stakes = transfers.stakes_at_epoch_start(con, epoch, role="contributor")
    totals: dict[str, float] = {}
    out: list[SubmissionScore] = []
    for task_name in sorted({s[2] for s in subs}):
        task = tasks[task_name]
        labels = pq.read_table(_home_path(home, task.challenge_labels)).sort_by("row_id")
        index = {v: i for i, v in enumerate(task.label_domain)}
        y = np.array([index[v] for v in labels.column(task.label).to_pylist()], dtype=np.int64)
        latest: dict[str, tuple] = {}
        for sub in (s for s in subs if s[2] == task_name):  # arrival order: a later file replaces an earlier one
            latest[sub[1]] = sub
        chosen = sorted(latest.values(), key=lambda s: s[1])
        probs = []
        for _, _, _, lake_path, _ in chosen:
            table = pq.read_table(home.root / lake_path).sort_by("row_id")
            probs.append(np.column_stack([table.column(c).to_numpy() for c in task.prediction_columns()[1:]]))
        model = score_models(probs, [float(stakes.get(s[1], 0)) for s in chosen], y, len(task.label_domain))
        scored = {s[0]: m.score for s, m in zip(chosen, model)}
        for submission_id, account_id, _, _, _ in (s for s in subs if s[2] == task_name):
            value = scored.get(submission_id, 0.0)
            out.append(SubmissionScore(submission_id, account_id, task_name, len(y), 0, value))
            totals[account_id] = totals.get(account_id, 0.0) + value
    return totals, out


def _features(table: pa.Table, task: Task) -> np.ndarray:
    return np.column_stack([table.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in task.feature_names()])


def _holdout_path(home: Home, task: Task) -> Path:
    return _home_path(home, task.holdout)


def _home_path(home: Home, ref: str) -> Path:
    """A path in a task file: absolute, or relative to the home."""
    path = Path(ref)
    return path if path.is_absolute() else home.root / path


def prior_rows(lake: Path, epoch: int, task: Task) -> pa.Table:
    """This task's rows landed in earlier epochs: features, row hash and contributor (first submitters first)."""
    columns = [*task.feature_names(), "_row_hash", "_contributor"]
    files = sorted(
        (int(d.name.split("=")[1]), f) for d in lake.glob("epoch=*") if int(d.name.split("=")[1]) < epoch
        for f in (d / "kind=dataset" / f"task={task.name}").glob("*.parquet")
    )
    if not files:
        return task.arrow_schema().empty_table().select(task.feature_names()).append_column(
            "_row_hash", pa.array([], pa.uint64())).append_column("_contributor", pa.array([], pa.string()))
    return pa.concat_tables([pq.read_table(f, columns=columns) for _, f in files])


# ---------------------------------------------------------------------------------------------------- weights
def house_weights_for(home: Home, scores: EpochScores) -> dict[str, float]:
    """The house validator's weights: data values and model scores mixed by the documented rule."""
    from rewards.house import mixed_house_weights

    return mixed_house_weights(scores.values, scores.model_scores, home.settings.prediction_share)


@dataclass(frozen=True)
class ValidatorWeights:
    epoch: int
    validators: tuple[str, ...]  # account ids, rows of W
    miners: tuple[str, ...]  # contributor account ids, columns of W
    weights: np.ndarray  # V x M, raw (Yuma normalizes rows)
    stake: np.ndarray  # V staked units at the epoch's start
    active: np.ndarray  # V bool: submitted weights this epoch (the house always does)
    house: str


def validator_weights(home: Home, scores: EpochScores) -> ValidatorWeights:
    """The house's weights from the measured values, plus each external validator's latest signed weight file."""
    epoch = scores.epoch
    with open_ledger(home.paths.ledger, read_only=True) as con:
        stakes = transfers.stakes_at_epoch_start(con, epoch)
        all_accounts = accounts.all_accounts(con)
        weight_subs = contributions.accepted(con, epoch, "weights")
    house = next(a.account_id for a in all_accounts if a.name == home.settings.house_name)
    miners = tuple(a.account_id for a in all_accounts if a.role == "contributor" and a.registered_epoch <= epoch)
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
    for _, account_id, _, lake_path, _ in weight_subs:  # ordered by arrival: a later file replaces an earlier one
        table = pq.read_table(home.root / lake_path)
        if table.num_rows and table.column("mode")[0].as_py() == wanted:
            latest[account_id] = table
    for account_id, table in sorted(latest.items()):
        if account_id not in row:
            continue  # no stake at the epoch's start: no say this epoch
        i = row[account_id]
        w[i, :] = 0.0
        for key, value in zip(table.column("miner_key").to_pylist(), table.column("weight").to_pylist()):
            miner = by_key.get(key)
            if miner in col:
                w[i, col[miner]] = float(value)
        active[i] = True
    stake = np.array([float(stakes.get(v, 0)) for v in validators])
    return ValidatorWeights(epoch, validators, miners, w, stake, active, house)


# ---------------------------------------------------------------------------------------------------- consensus
@dataclass(frozen=True)
class ConsensusOutcome:
    weights: ValidatorWeights
    result: object  # rewards.consensus.YumaResult
    bonds_prev: np.ndarray
    params: dict


def run_consensus(home: Home, vw: ValidatorWeights) -> ConsensusOutcome:
    """Yuma Consensus over the validators that weighed in this epoch, carrying bonds from the last epoch."""
    from rewards.backend import get_xp
    from rewards.consensus import YumaParams, validator_permits, yuma_epoch

    s = home.settings
    params = YumaParams(
        kappa=s.kappa, bonds_penalty=s.bonds_penalty, bonds_moving_average=s.bonds_moving_average,
        yuma_version=s.yuma_version, liquid_alpha_enabled=s.liquid_alpha_enabled, alpha_low=s.alpha_low,
        alpha_high=s.alpha_high, alpha_sigmoid_steepness=s.alpha_sigmoid_steepness,
        max_allowed_validators=s.max_allowed_validators, storage=s.yuma_storage, sparse_bonds=s.sparse_bonds,
    )
    bonds_prev = _previous_bonds(home, vw)
    # Only the top max_allowed_validators stakes hold a permit (the chain's tie rule; the house always does). A
    # validator without a permit, or that did not weigh in this epoch, is inactive (yuma.md §1.3-1.4): no stake and
    # no weight row, so it can neither sway the median nor buy Yuma 3 bonds; its bond row is cleared.
    permit = validator_permits(vw.stake, s.max_allowed_validators, owner_row=vw.validators.index(vw.house))
    bonds_prev[~permit] = 0.0
    active = vw.active & (vw.stake > 0) & permit
    active_stake = np.where(active, vw.stake, 0.0)
    weights = np.where(active[:, None], vw.weights, 0.0)
    result = yuma_epoch(weights, active_stake, bonds_prev, params, xp=get_xp(s.array_backend))
    return ConsensusOutcome(vw, result, bonds_prev, params.__dict__.copy())


def _previous_bonds(home: Home, vw: ValidatorWeights) -> np.ndarray:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        rows = con.execute(
            "SELECT validator, miner, bond FROM bonds WHERE epoch = (SELECT max(epoch) FROM bonds WHERE epoch < ?)",
            [vw.epoch],
        ).fetchall()
    row = {v: i for i, v in enumerate(vw.validators)}
    col = {m: j for j, m in enumerate(vw.miners)}
    bonds = np.zeros((len(vw.validators), len(vw.miners)))
    for validator, miner, bond in rows:
        if validator in row and miner in col:
            bonds[row[validator], col[miner]] = bond
    return bonds


# ---------------------------------------------------------------------------------------------------- settle
def build_settlement(home: Home, scores: EpochScores, outcome: ConsensusOutcome) -> Settlement:
    """Turn consensus into reward lines whose shares sum to one, and digest every input that produced them."""
    from rewards.backend import to_numpy
    from rewards.emission import emission_shares

    vw, r = outcome.weights, outcome.result
    incentive, dividends = to_numpy(r.incentive), to_numpy(r.dividends)
    consensus, trust, active_stake = to_numpy(r.consensus), to_numpy(r.validator_trust), to_numpy(r.active_stake)
    shares = emission_shares(incentive, dividends, active_stake, owner_cut=home.settings.owner_cut)
    house_w = house_weights_for(home, scores)
    lines = [RewardLine(account_id="owner", role="owner", share=float(shares.owner), kind="owner_cut")]
    for j, miner in enumerate(vw.miners):
        lines.append(RewardLine(
            account_id=miner, role="contributor", share=float(shares.miners[j]), kind="incentive",
            value=float(scores.values.get(miner, 0.0)), weight=float(house_w.get(miner, 0.0)),
            model_score=float(scores.model_scores.get(miner, 0.0)),
            consensus=float(consensus[j]), incentive=float(incentive[j]), dividends=0.0,
        ))
    for i, validator in enumerate(vw.validators):
        lines.append(RewardLine(
            account_id=validator, role="validator", share=float(shares.validators[i]), kind="dividend",
            bucket="staked", weight=float(active_stake[i]), dividends=float(dividends[i]), stake=int(vw.stake[i]),
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
        "stake": vw.stake.tolist(),
        "active": vw.active.tolist(),
        "bonds_prev": outcome.bonds_prev.tolist(),
        "params": outcome.params,
        "emission": home.settings.epoch_emission_units,
        "owner_cut": home.settings.owner_cut,
    }
    return Settlement(
        epoch=vw.epoch,
        inputs_digest=digest(inputs),
        reports=weight_copy_report(home, vw, norm_w),
        emission=home.settings.epoch_emission_units,
        lines=tuple(lines),
        bonds=tuple((v, m, float(bonds[i, j])) for i, v in enumerate(vw.validators)
                    for j, m in enumerate(vw.miners) if bonds[i, j] > 0),
        weights=tuple((v, m, float(norm_w[i, j])) for i, v in enumerate(vw.validators)
                      for j, m in enumerate(vw.miners) if norm_w[i, j] > 0),
        contributions=tuple(ContributionUpdate(s.submission_id, s.status, s.duplicate_rows, s.value)
                            for s in scores.submissions),
    )


def weight_copy_report(home: Home, vw: ValidatorWeights, norm_w: np.ndarray) -> tuple:
    """Per validator that weighed in: cosine similarity of its weights to the last public consensus, and to its own
    weights of the last epoch it weighed in. A copier tracks the first more closely than the second."""
    with open_ledger(home.paths.ledger, read_only=True) as con:
        last = con.execute("SELECT max(epoch) FROM rewards WHERE epoch < ?", [vw.epoch]).fetchone()[0]
        consensus = dict(con.execute("SELECT account_id, consensus FROM rewards WHERE epoch = ? AND role = 'contributor'",
                                     [last]).fetchall()) if last is not None else {}
        history = con.execute(
            "SELECT validator, miner, weight FROM weights w WHERE epoch = "
            "(SELECT max(epoch) FROM weights x WHERE x.validator = w.validator AND x.epoch < ?)", [vw.epoch]
        ).fetchall()
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
    """Write the settlement into the ledger (a no-op if this epoch was settled from the same inputs)."""
    with open_ledger(home.paths.ledger) as con:
        return settle_epoch(con, settlement, now=utcnow())


# ---------------------------------------------------------------------------------------------------- whole epoch
@dataclass(frozen=True)
class EpochRun:
    ingest: IngestSummary
    scores: EpochScores
    settlement: Settlement | None
    outcome: SettleOutcome | None


def run_epoch(home: Home, *, close: bool = False) -> EpochRun:
    """Ingest and score the open epoch; with close=True also run consensus and settle it, opening the next."""
    summary = ingest(home)
    scores = score(home, summary.epoch)
    if not close:
        return EpochRun(summary, scores, None, None)
    vw = validator_weights(home, scores)
    settlement = build_settlement(home, scores, run_consensus(home, vw))
    return EpochRun(summary, scores, settlement, settle(home, settlement))
