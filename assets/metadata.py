"""The metadata an operator sees on each epoch asset, built from the ledger's EpochReport alone.

Both a Dagster run and the ledger sync (epochs settled from the CLI) attach exactly these, so an epoch looks the same
in the UI whichever driver settled it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.charts import markdown_image, reward_chart, save_chart, value_chart
from ledger.epoch_report import EpochReport
from ledger.money import units_to_tokens


def markdown_table(header: list[str], rows: list[list]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def ingest_metadata(r: EpochReport, data_docs: tuple[str, ...] = ()) -> dict:
    """Submissions accepted, duplicate and quarantined (by reason), the rows landed, the GX Data Docs."""
    md = {
        "ledger_epoch": r.epoch,
        "epoch_state": r.state,
        "accepted": r.accepted,
        "duplicates": r.duplicates,
        "quarantined": sum(r.quarantined.values()),
        "rows": r.rows,
        "quarantine_reasons": markdown_table(["reason", "submissions"], sorted(r.quarantined.items())),
    }
    if data_docs:
        md["data_docs"] = dg.MetadataValue.md("\n".join(f"- [{Path(d).parent.name}](file://{d})" for d in data_docs))
    return md


def values_metadata(r: EpochReport) -> dict:
    """Rows and value per contributor (final once the epoch is settled), what the epoch's rows added per task (gain
    and U'(lake) on the holdout), and each submission's originality figures: an epoch pays for what it added."""
    md = {
        "ledger_epoch": r.epoch,
        "contributors": len(r.contributors),
        "duplicate_rows": sum(c.duplicate_rows for c in r.contributors),
        "value_per_contributor": markdown_table(
            ["contributor", "submissions", "rows", "duplicate rows", "value"],
            [[c.name, c.submissions, c.rows, c.duplicate_rows, f"{c.value:.6f}"] for c in r.contributors[:50]]),
        "unoriginal_submissions": r.unoriginal,
        "unoriginal_rows": sum(s.unoriginal_rows or 0 for s in r.submissions),
        "originality_cost": float(sum(s.originality_cost or 0.0 for s in r.submissions)),
        "epoch_value": markdown_table(
            ["task", "gain", "U'(lake)", "lake rows", "new rows", "admitted rows", "holdout rows"],
            [[v.task, f"{v.gain:.6f}", f"{v.lake_utility:.6f}", v.lake_rows, v.new_rows, v.admitted_rows,
              v.test_rows] for v in r.epoch_values]),
        "originality": markdown_table(
            ["submission", "contributor", "task", "status", "rows", "judged", "unoriginal", "gate p", "median p",
             "value", "cost"],
            [[s.submission_id[:16], s.name, s.task, s.status, s.rows, _count(s.judged_rows), _count(s.unoriginal_rows),
              _p(s.gate_p), _p(s.median_p), f"{s.value:.6f}", _fmt(s.originality_cost, 6)]
             for s in r.submissions[:50]]),
    }
    for v in r.epoch_values:  # numbers, so the UI plots them across partitions
        md[f"gain_{v.task}"] = float(v.gain)
        md[f"lake_utility_{v.task}"] = float(v.lake_utility)
    return md


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def consensus_metadata(r: EpochReport) -> dict:
    """Validator trust, dividends and weight-copy flags."""
    return {
        "ledger_epoch": r.epoch,
        "validator_trust": markdown_table(
            ["validator", "stake (tokens)", "trust", "dividends", "sim. to consensus", "sim. to own history", "copy flag"],
            [[v.name, units_to_tokens(v.stake_units), _fmt(v.trust, 4), _fmt(v.dividends, 4),
              _fmt(v.similarity_to_consensus), _fmt(v.similarity_to_own_history), "⚠ copies" if v.copy_flag else ""]
             for v in r.validators]),
        "weight_copy_flags": sum(1 for v in r.validators if v.copy_flag),
    }


def settlement_metadata(r: EpochReport, history: dict[str, list[tuple[int, float]]], charts_dir: Path,
                        settled_now: bool) -> dict:
    """The settled result: chain hash and digests, emission paid, the payouts as a table and as PNG charts."""
    paid = [(name, float(units_to_tokens(amount))) for _, name, _, amount in r.rewards if amount]
    rewards_png = reward_chart(r.epoch, paid)
    values_png = value_chart(r.epoch, history)
    rewards_path = save_chart(charts_dir, "rewards.png", rewards_png)
    values_path = save_chart(charts_dir, "values.png", values_png)
    return {
        "ledger_epoch": r.epoch,
        "settled_now": settled_now,
        "chain_hash": r.hash or "",
        "inputs_digest": r.inputs_digest or "",
        "results_digest": r.results_digest or "",
        "emission_tokens": units_to_tokens(r.emission_units or 0),
        "paid_tokens": units_to_tokens(r.paid_units),
        "rewards": markdown_table(["account", "role", "tokens"],
                                  [[name, role, units_to_tokens(amount)] for _, name, role, amount in r.rewards
                                   if amount][:50]),
        "reward_distribution": dg.MetadataValue.md(markdown_image(f"epoch {r.epoch} rewards", rewards_png)),
        "value_over_epochs": dg.MetadataValue.md(markdown_image("value per contributor", values_png)),
        "charts": dg.MetadataValue.path(str(rewards_path.parent)),
        "reward_chart_png": dg.MetadataValue.path(str(rewards_path)),
        "value_chart_png": dg.MetadataValue.path(str(values_path)),
    }
