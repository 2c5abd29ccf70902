"""The epoch's assets: thin wrappers over tributary.epoch, with the metadata an operator wants to see."""


import warnings
from pathlib import Path

import dagster as dg

from assets.partitions import EPOCH_PARTITIONS
from assets.resources import TributaryHome
from ledger.money import units_to_tokens
from tributary import epoch as stages

GROUP = "epoch"


def _markdown_table(header: list[str], rows: list[list]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP)
def contributions(context: dg.AssetExecutionContext, tributary: TributaryHome) -> stages.IngestSummary:
    """Signed submissions from drop/, verified and landed in the lake by the Beam ingest pipeline."""
    summary = stages.ingest(tributary.open())
    context.add_output_metadata({
        "ledger_epoch": summary.epoch,
        "accepted": summary.accepted,
        "quarantined": summary.quarantined,
        "rows": summary.rows,
        "quarantine_reasons": _markdown_table(["reason", "count"], sorted(summary.reasons.items())),
        "waiting": summary.waiting,
        "suspicious": summary.suspicious,
        **({"data_docs": dg.MetadataValue.md("\n".join(f"- [{Path(d).parent.name}](file://{d})"
                                                          for d in summary.data_docs))}
           if summary.data_docs else {}),
    })
    return summary


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP)
def validated_contributions(context: dg.AssetExecutionContext, tributary: TributaryHome,
                            contributions: stages.IngestSummary) -> stages.LakeSnapshot:
    """The epoch's accepted dataset submissions in the lake, each of which passed its task's GX suite at ingest."""
    snapshot = stages.lake_snapshot(tributary.open(), contributions.epoch)
    context.add_output_metadata({
        "ledger_epoch": snapshot.epoch,
        "submissions": len(snapshot.submissions),
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
        """Re-run the Great Expectations suites on what landed: the lake must hold only data that passes."""
        reports = stages.revalidate(tributary.open(), validated_contributions)
        failed = [(sid, r.summary()) for sid, r in reports if not r.success]
        return dg.AssetCheckResult(
            passed=not failed,
            metadata={
                "submissions_checked": len(reports),
                "expectations_run": sum(len(r.lines) for _, r in reports),
                "failures": _markdown_table(["submission", "failed expectations"], failed),
            },
        )


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP)
def contribution_values(context: dg.AssetExecutionContext, tributary: TributaryHome,
                        validated_contributions: stages.LakeSnapshot) -> stages.EpochScores:
    """Exact KNN-Shapley value of every new row, marginal to the whole lake; duplicates of any earlier row earn 0."""
    scores = stages.score(tributary.open(), validated_contributions.epoch)
    top = sorted(scores.values.items(), key=lambda kv: -kv[1])[:10]
    copies = [[s.submission_id[:16], s.account_id, str(s.duplicate_rows), ", ".join(d[:16] for d in s.duplicate_of)]
              for s in scores.submissions if s.duplicate_of]
    context.add_output_metadata({
        "ledger_epoch": scores.epoch,
        "submissions": len(scores.submissions),
        "duplicate_rows": sum(s.duplicate_rows for s in scores.submissions),
        "top_contributors": _markdown_table(["account", "value"], [[a, f"{v:.6f}"] for a, v in top]),
        "duplicates": _markdown_table(["submission", "account", "duplicate rows", "copies"], copies[:20]),
        "valuation_pools": _markdown_table(
            ["task", "lake rows", "new rows", "pool rows", "left out (MAX_POOL_ROWS)"],
            [[t, str(p["prior_rows"]), str(p["new_rows"]), str(p["pool_rows"]), str(p["left_out"])]
             for t, p in sorted(scores.pools.items())]),
    })
    return scores


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP)
def validator_weights(context: dg.AssetExecutionContext, tributary: TributaryHome,
                      contribution_values: stages.EpochScores) -> stages.ValidatorWeights:
    """The house validator's weights from the values, beside each staked validator's signed weight file."""
    vw = stages.validator_weights(tributary.open(), contribution_values)
    context.add_output_metadata({
        "validators": len(vw.validators),
        "active_validators": int(vw.active.sum()),
        "miners": len(vw.miners),
    })
    return vw


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP)
def consensus(context: dg.AssetExecutionContext, tributary: TributaryHome,
              validator_weights: stages.ValidatorWeights) -> stages.ConsensusOutcome:
    """Yuma Consensus: stake-weighted median, clipping, bonds and dividends."""
    outcome = stages.run_consensus(tributary.open(), validator_weights)
    r = outcome.result
    context.add_output_metadata({
        "validator_trust": _markdown_table(
            ["validator", "stake (tokens)", "trust", "dividends"],
            [[v, units_to_tokens(int(validator_weights.stake[i])), f"{r.validator_trust[i]:.4f}", f"{r.dividends[i]:.4f}"]
             for i, v in enumerate(validator_weights.validators)],
        ),
    })
    return outcome


@dg.asset(partitions_def=EPOCH_PARTITIONS, group_name=GROUP)
def epoch_settlement(context: dg.AssetExecutionContext, tributary: TributaryHome,
                     contribution_values: stages.EpochScores, consensus: stages.ConsensusOutcome) -> dg.MaterializeResult:
    """Rewards and payouts written to the DuckDB ledger in one transaction; the epoch joins the hash chain."""
    home = tributary.open()
    settlement = stages.build_settlement(home, contribution_values, consensus)
    outcome = stages.settle(home, settlement)
    paid = sorted(((a, n) for a, n in outcome.amounts.items() if n), key=lambda kv: -kv[1])
    top = paid[0][1] if paid else 1
    names = stages.account_names(home)
    chart = [[names.get(a, a), units_to_tokens(n), "█" * max(1, round(30 * n / top))] for a, n in paid]
    return dg.MaterializeResult(metadata={
        "ledger_epoch": outcome.epoch,
        "settled_now": outcome.settled,
        "chain_hash": outcome.hash,
        "emission_tokens": units_to_tokens(settlement.emission),
        "rewards": _markdown_table(["account", "tokens", ""], chart),
        "weight_copy_report": _markdown_table(
            ["validator", "similarity to last consensus", "similarity to own history"],
            [[names.get(v, v), _fmt(c), _fmt(h)] for v, c, h in settlement.reports],
        ),
    })


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


EPOCH_ASSETS = [contributions, validated_contributions, contribution_values, validator_weights, consensus, epoch_settlement]
EPOCH_CHECKS = [lake_passes_quality_suites]
