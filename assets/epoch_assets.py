"""The epoch's assets: thin wrappers over engine.epoch, one ledger epoch per partition.

A run for partition N acts on ledger epoch N alone: it ingests into N only while N is open, pins N before scoring
it, and settles N once. Run again for a settled epoch, every asset is a no-op that reports the settled result (the
same digests); an epoch that has not begun fails the run with the rule, so nothing can mint an epoch the ledger did
not open. Every asset is in the `tributary_epoch` pool (one epoch writer at a time) and the stages hold the home's
epoch lock, as the CLI does.
"""


import warnings
from typing import Optional

import dagster as dg

from assets.metadata import consensus_metadata, ingest_metadata, markdown_table, settlement_metadata, values_metadata
from assets.partitions import EPOCH_PARTITIONS, epoch_of, partition_key
from assets.resources import TributaryHome
from ledger.db import open_ledger
from ledger.epoch_report import ContributorLine, EpochReport, SubmissionLine, epoch_report, value_history
from ledger.errors import EpochOrderError
from ledger.money import units_to_tokens
from engine import stages
from engine.epoch import epoch_status, pin
from engine.home import Home

GROUP = "epoch"
POOL = "tributary_epoch"


def _report(home: Home, epoch: int) -> EpochReport:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return epoch_report(con, epoch)


def _state(home: Home, epoch: int) -> str:
    try:
        return epoch_status(home, epoch)
    except EpochOrderError as e:  # a partition for an epoch the ledger has not opened: fail with the rule
        raise dg.Failure(str(e)) from None


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP, pool=POOL)
def contributions(context: dg.AssetExecutionContext, tributary: TributaryHome) -> stages.IngestSummary:
    """Signed submissions from drop/, verified and landed in the lake by the Beam ingest pipeline (open epoch only)."""
    home, epoch = tributary.open(), epoch_of(context)
    if _state(home, epoch) == "settled":
        summary = stages.IngestSummary(epoch, 0, 0, {}, 0)  # settled: nothing lands in it any more
    else:
        summary = stages.ingest(home, epoch)
    context.add_output_metadata({
        **ingest_metadata(_report(home, epoch), summary.data_docs),
        "landed_by_this_run": summary.accepted,
        "waiting": summary.waiting,
        "suspicious": summary.suspicious,
    })
    return summary


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP, pool=POOL)
def validated_contributions(context: dg.AssetExecutionContext, tributary: TributaryHome,
                            contributions: stages.IngestSummary) -> stages.LakeSnapshot:
    """The epoch pinned (nothing more lands in it) and its accepted submissions and stakes read once: what the GX
    check validates is exactly what is scored and settled."""
    home, epoch = tributary.open(), epoch_of(context)
    if _state(home, epoch) != "settled":
        pin(home, epoch)
    snapshot = stages.lake_snapshot(home, epoch)
    context.add_output_metadata({
        "ledger_epoch": snapshot.epoch,
        "submissions": len(snapshot.submissions),
        "predictions": len(snapshot.predictions),
        "weight_files": len(snapshot.weights),
        "rows": sum(s.rows for s in snapshot.submissions),
        "tasks": ", ".join(sorted({s.task for s in snapshot.submissions})) or "none",
    })
    return snapshot


# The check takes the partitioned asset as input, so it must be partitioned the same way: without partitions_def
# Dagster loads *every* epoch partition of validated_contributions into it (and fails on the ones never materialized).
# (Partitioned checks are a Dagster "preview" feature; its PreviewWarning is silenced here only.)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(asset=validated_contributions, blocking=True, partitions_def=EPOCH_PARTITIONS,
                    description="Every landed submission passes its task's GX suite.")
    def lake_passes_quality_suites(tributary: TributaryHome, validated_contributions: stages.LakeSnapshot) -> dg.AssetCheckResult:
        """Re-run the Great Expectations suites on what landed: the lake must hold only data that passes.

        A failure blocks scoring and settlement; `tributary exclude SUBMISSION_ID --reason TEXT` is the way out."""
        reports = stages.revalidate(tributary.open(), validated_contributions)
        failed = [(sid, r.summary()) for sid, r in reports if not r.success]
        tasks = {s.submission_id: s.task for s in validated_contributions.submissions}
        per_task: dict[str, list[int]] = {}
        for sid, r in reports:
            per_task.setdefault(tasks.get(sid, "?"), [0, 0])[0 if r.success else 1] += 1
        return dg.AssetCheckResult(
            passed=not failed,
            metadata={
                "submissions_checked": len(reports),
                "expectations_run": sum(len(r.lines) for _, r in reports),
                "per_task": markdown_table(["task", "passed", "failed"],
                                           [[t, p, f] for t, (p, f) in sorted(per_task.items())]),
                "failures": markdown_table(["submission", "failed expectations"], failed),
                **({"way_out": dg.MetadataValue.md(
                    "Exclude a failing submission, then launch the partition again:\n\n"
                    + "\n".join(f"`tributary exclude {sid} --reason \"...\"`" for sid, _ in failed))} if failed else {}),
            },
        )


def scored_report(home: Home, scores: stages.EpochScores) -> EpochReport:
    """An epoch just scored (not settled yet) as the EpochReport its settled figures will make: value per
    contributor, each dataset submission's originality figures and what the epoch's rows added per task."""
    from engine.stages.settle import dataset_submission_ids, epoch_values

    names = stages.account_names(home)
    datasets = dataset_submission_ids(home, scores.epoch)
    per: dict[str, list] = {}
    for s in scores.submissions:
        line = per.setdefault(s.account_id, [0, 0, 0, 0.0])
        line[0] += 1
        line[1] += s.rows
        line[2] += s.duplicate_rows
        line[3] += s.value
    lines = sorted((ContributorLine(a, names.get(a, a), *v) for a, v in per.items()),
                   key=lambda c: (-c.value, c.account_id))
    subs = sorted((SubmissionLine(s.submission_id, names.get(s.account_id, s.account_id), s.task, s.status, s.rows,
                                  s.duplicate_rows, s.judged_rows, s.unoriginal_rows, s.gate_p, s.median_p, s.value,
                                  s.value_without_originality)
                   for s in scores.submissions if s.submission_id in datasets),
                  key=lambda s: (-s.value, s.submission_id))
    return EpochReport(scores.epoch, "scored", 0, 0, {}, 0, tuple(lines), (), (), None, 0, None, None, None,
                       tuple(subs), epoch_values(scores, datasets))


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP, pool=POOL)
def contribution_values(context: dg.AssetExecutionContext, tributary: TributaryHome,
                        validated_contributions: stages.LakeSnapshot) -> Optional[stages.EpochScores]:
    """Exact Shapley value of every new row in the game where the lake is always present (the values of a task's
    rows add up to what they added to the lake's KNN utility on the holdout); duplicates of any earlier row, and rows
    or whole submissions that lie closer to what the market held than fresh draws do (unoriginal), earn 0.

    None for a settled epoch: its values are in the ledger and are reported from there, never recomputed."""
    home, epoch = tributary.open(), validated_contributions.epoch
    if _state(home, epoch) == "settled":
        context.add_output_metadata({**values_metadata(_report(home, epoch)), "settled_already": True})
        return None
    scores = stages.score(home, epoch, validated_contributions)
    copies = [[s.submission_id[:16], s.account_id, str(s.duplicate_rows), ", ".join(d[:16] for d in s.duplicate_of)]
              for s in scores.submissions if s.duplicate_of]
    context.add_output_metadata({
        **values_metadata(scored_report(home, scores)),
        "settled_already": False,
        "duplicates": markdown_table(["submission", "account", "duplicate rows", "copies"], copies[:20]),
        "valuation_pools": markdown_table(
            ["task", "lake rows", "new rows", "pool rows"],
            [[t, str(p["prior_rows"]), str(p["new_rows"]), str(p["pool_rows"])]
             for t, p in sorted(scores.pools.items())]),
    })
    return scores


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP, pool=POOL)
def validator_weights(context: dg.AssetExecutionContext, tributary: TributaryHome,
                      validated_contributions: stages.LakeSnapshot,
                      contribution_values: Optional[stages.EpochScores]) -> Optional[stages.ValidatorWeights]:
    """The house validator's weights from the values, beside each staked validator's signed weight file."""
    if contribution_values is None:
        context.add_output_metadata({"ledger_epoch": validated_contributions.epoch, "settled_already": True})
        return None
    vw = stages.validator_weights(tributary.open(), contribution_values, validated_contributions)
    context.add_output_metadata({
        "ledger_epoch": vw.epoch,
        "settled_already": False,
        "validators": len(vw.validators),
        "active_validators": int(vw.active.sum()),
        "miners": len(vw.miners),
    })
    return vw


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP, pool=POOL)
def consensus(context: dg.AssetExecutionContext, tributary: TributaryHome,
              validated_contributions: stages.LakeSnapshot,
              validator_weights: Optional[stages.ValidatorWeights]) -> Optional[stages.ConsensusOutcome]:
    """Yuma Consensus: stake-weighted median, clipping, bonds and dividends."""
    home, epoch = tributary.open(), validated_contributions.epoch
    if validator_weights is None:
        context.add_output_metadata({**consensus_metadata(_report(home, epoch)), "settled_already": True})
        return None
    outcome = stages.run_consensus(home, validator_weights)
    r, names = outcome.result, stages.account_names(home)
    context.add_output_metadata({
        "ledger_epoch": epoch,
        "settled_already": False,
        "validator_trust": markdown_table(
            ["validator", "stake (tokens)", "trust", "dividends"],
            [[names.get(v, v), units_to_tokens(int(validator_weights.stake_units[i])), f"{r.validator_trust[i]:.4f}",
              f"{r.dividends[i]:.4f}"] for i, v in enumerate(validator_weights.validators)]),
    })
    return outcome


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP, pool=POOL)
def epoch_settlement(context: dg.AssetExecutionContext, tributary: TributaryHome,
                     validated_contributions: stages.LakeSnapshot,
                     contribution_values: Optional[stages.EpochScores],
                     consensus: Optional[stages.ConsensusOutcome]) -> dg.MaterializeResult:
    """Rewards and payouts written to the DuckDB ledger in one transaction; the epoch joins the hash chain.

    Settles the partition's epoch once; run again it reports the settled result. The next epoch becomes a partition."""
    home, epoch = tributary.open(), validated_contributions.epoch
    settled_now = False
    if consensus is not None:
        assert contribution_values is not None
        outcome = stages.settle(home, stages.build_settlement(home, contribution_values, consensus))
        settled_now = outcome.settled
    instance = context.instance
    if not instance.has_dynamic_partition(EPOCH_PARTITIONS.name, partition_key(epoch + 1)):
        instance.add_dynamic_partitions(EPOCH_PARTITIONS.name, [partition_key(epoch + 1)])
    return dg.MaterializeResult(metadata=settled_epoch_metadata(home, epoch, settled_now))


def settled_epoch_metadata(home: Home, epoch: int, settled_now: bool) -> dict:
    """epoch_settlement's metadata for a settled epoch, from the ledger (used by runs and the ledger sync alike)."""
    with open_ledger(home.paths.ledger, read_only=True) as con:
        report, history = epoch_report(con, epoch), value_history(con, epoch)
    return settlement_metadata(report, history, home.root / "reports" / f"epoch={epoch}", settled_now)


def _settled_report(context, tributary: TributaryHome) -> tuple[Home, EpochReport]:
    home = tributary.open()
    return home, _report(home, epoch_of(context))


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(asset=epoch_settlement, blocking=True, partitions_def=EPOCH_PARTITIONS,
                    description="After settlement the whole ledger audits clean: hash chain, balances, payouts.")
    def ledger_invariants_hold(context: dg.AssetCheckExecutionContext, tributary: TributaryHome) -> dg.AssetCheckResult:
        """`tributary audit` over the ledger: every link recomputes, every transfer balances, no negative balance."""
        from ledger.audit import audit

        home = tributary.open()
        with open_ledger(home.paths.ledger, read_only=True) as con:
            report = audit(con)
        return dg.AssetCheckResult(passed=report.ok, metadata={
            "epochs_checked": report.epochs_checked, "transfers_checked": report.transfers_checked,
            "problems": markdown_table(["problem"], [[p] for p in report.problems[:50]])})

    @dg.asset_check(asset=epoch_settlement, blocking=True, partitions_def=EPOCH_PARTITIONS,
                    description="The epoch paid its emission exactly: rewards and minted transfers both sum to it.")
    def emission_paid_exactly(context: dg.AssetCheckExecutionContext, tributary: TributaryHome) -> dg.AssetCheckResult:
        """Sum of the epoch's rewards and of its payout transfers from `emission`, each equal to the emission."""
        from ledger.audit import emission_paid

        home, report = _settled_report(context, tributary)
        with open_ledger(home.paths.ledger, read_only=True) as con:
            paid = emission_paid(con, report.epoch)
        minted = paid[0].minted if paid else 0  # payouts are written in the transaction that settles the epoch
        emission = report.emission_units
        return dg.AssetCheckResult(
            passed=report.settled and bool(paid) and paid[0].exact,
            metadata={"emission_units": emission if emission is not None else -1, "rewards_units": report.paid_units,
                      "minted_units": minted, "epoch_state": report.state})


EPOCH_ASSETS = [contributions, validated_contributions, contribution_values, validator_weights, consensus, epoch_settlement]
EPOCH_CHECKS = [lake_passes_quality_suites, ledger_invariants_hold, emission_paid_exactly]
