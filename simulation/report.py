"""The simulation's figures, read back from the ledger, and its report: Parquet, PNG charts, report.md.

`accounts.parquet`: one row per contributor key and epoch; `validators.parquet`: one row per validator and epoch (the
house included). Both hold only what the ledger and the scenario determine (no timings, no wall-clock), so the same
scenario and seed write the same bytes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.money import UNITS_PER_TOKEN

if TYPE_CHECKING:
    from simulation.market import SimulationResult

ACCOUNTS_FILE = "accounts.parquet"
VALIDATORS_FILE = "validators.parquet"
CHARTS = ("earnings_per_epoch.png", "earnings_per_row.png", "validator_earnings.png")

ACCOUNT_SCHEMA = pa.schema([
    ("epoch", pa.int64()), ("account", pa.string()), ("group", pa.string()), ("strategy", pa.string()),
    ("player", pa.string()), ("rows_sent", pa.int64()), ("rows_accepted", pa.int64()),
    ("duplicate_rows", pa.int64()), ("rows_quarantined", pa.int64()), ("value", pa.float64()),
    ("consensus", pa.float64()), ("incentive", pa.float64()), ("amount_units", pa.int64()), ("stake_units", pa.int64()),
])
VALIDATOR_SCHEMA = pa.schema([
    ("epoch", pa.int64()), ("account", pa.string()), ("group", pa.string()), ("strategy", pa.string()),
    ("stake_units", pa.int64()), ("active", pa.bool_()), ("active_stake_share", pa.float64()),
    ("dividends", pa.float64()), ("trust", pa.float64()), ("amount_units", pa.int64()),
])


def collect_figures(home, contributors, validators, sent_rows: dict, *, epochs_run: int) -> tuple[pa.Table, pa.Table]:
    """Per key and epoch, from the ledger (read-only): rows, duplicates, value, incentive, amount paid, stake."""
    from ledger.accounts import all_accounts
    from ledger.contributions import landed_rows
    from ledger.db import open_ledger
    from ledger.epoch_report import reward_figures

    with open_ledger(home.paths.ledger, read_only=True) as con:
        names = {a.account_id: a.name for a in all_accounts(con)}
        contrib = landed_rows(con)
        rewards = reward_figures(con, first_epoch=1)
    landed = {(e, names[a]): (int(r), int(d)) for e, a, r, d in contrib}
    reward = {(e, names[a]): row for e, a, *row in rewards}
    epochs = sorted({e for e, *_ in rewards})[:epochs_run]

    acc = defaultdict(list)
    for epoch in epochs:
        for player in contributors:
            for key in player.keys:
                role, value, consensus, incentive, _div, amount, stake, _trust, _w = reward.get(
                    (epoch, key), ("contributor", 0.0, 0.0, 0.0, 0.0, 0, 0, None, None))
                rows, dup = landed.get((epoch, key), (0, 0))
                sent = sent_rows.get((key, epoch), 0)
                for col, v in (("epoch", epoch), ("account", key), ("group", player.group.name),
                               ("strategy", player.strategy), ("player", f"{player.group.name}-{player.index}"),
                               ("rows_sent", sent), ("rows_accepted", rows), ("duplicate_rows", dup),
                               ("rows_quarantined", sent - rows), ("value", float(value or 0.0)),
                               ("consensus", float(consensus or 0.0)), ("incentive", float(incentive or 0.0)),
                               ("amount_units", int(amount or 0)), ("stake_units", int(stake or 0))):
                    acc[col].append(v)
    val = defaultdict(list)
    house = home.settings.house_name
    cast = [(house, "house", "house")] + [(v.key, v.group.name, v.strategy)
                                          for v in sorted(validators, key=lambda v: v.key)]
    for epoch in epochs:
        rows = {name: reward.get((epoch, name)) for name, _, _ in cast}
        active_total = sum(float(r[8] or 0.0) for r in rows.values() if r)
        for name, group, strategy in cast:
            _role, _value, _c, _i, dividends, amount, stake, trust, weight = rows[name] or (
                "validator", None, None, None, 0.0, 0, 0, 0.0, 0.0)
            weight = float(weight or 0.0)
            for col, v in (("epoch", epoch), ("account", name), ("group", group), ("strategy", strategy),
                           ("stake_units", int(stake or 0)), ("active", weight > 0),
                           ("active_stake_share", weight / active_total if active_total else 0.0),
                           ("dividends", float(dividends or 0.0)), ("trust", float(trust or 0.0)),
                           ("amount_units", int(amount or 0))):
                val[col].append(v)
    return (pa.table({f.name: acc[f.name] for f in ACCOUNT_SCHEMA}, schema=ACCOUNT_SCHEMA),
            pa.table({f.name: val[f.name] for f in VALIDATOR_SCHEMA}, schema=VALIDATOR_SCHEMA))


def contributor_summary(accounts: pa.Table) -> list[dict]:
    """Per contributor group, in scenario order: keys, rows, duplicates, value, tokens, tokens per accepted row."""
    out: dict[str, dict] = {}
    for r in accounts.to_pylist():
        s = out.setdefault(r["group"], {"group": r["group"], "strategy": r["strategy"], "keys": set(), "rows_sent": 0,
                                        "rows_accepted": 0, "duplicate_rows": 0, "rows_quarantined": 0, "value": 0.0,
                                        "amount_units": 0})
        s["keys"].add(r["account"])
        for col in ("rows_sent", "rows_accepted", "duplicate_rows", "rows_quarantined", "value", "amount_units"):
            s[col] += r[col]
    honest = [s for s in out.values() if s["strategy"] == "honest"]
    honest_rate = (sum(s["amount_units"] for s in honest) / sum(s["rows_accepted"] for s in honest)
                   if honest and sum(s["rows_accepted"] for s in honest) else None)
    for s in out.values():
        s["keys"] = len(s["keys"])
        s["tokens"] = s["amount_units"] / UNITS_PER_TOKEN
        rate = s["amount_units"] / s["rows_accepted"] if s["rows_accepted"] else 0.0
        s["tokens_per_row"] = rate / UNITS_PER_TOKEN
        s["vs_honest"] = rate / honest_rate if honest_rate else None
    return list(out.values())


def validator_summary(validators: pa.Table) -> list[dict]:
    """Per validator group: epochs active, stake, tokens, tokens earned per staked token (over its active epochs)."""
    out: dict[str, dict] = {}
    for r in validators.to_pylist():
        s = out.setdefault(r["group"], {"group": r["group"], "strategy": r["strategy"], "validators": set(),
                                        "epochs_active": 0, "stake_units": 0, "amount_units": 0, "trust_sum": 0.0})
        s["validators"].add(r["account"])
        if r["active"]:
            s["epochs_active"] += 1
            s["stake_units"] += r["stake_units"]
            s["amount_units"] += r["amount_units"]
            s["trust_sum"] += r["trust"]
    for s in out.values():
        s["validators"] = len(s["validators"])
        s["tokens"] = s["amount_units"] / UNITS_PER_TOKEN
        s["per_stake"] = s["amount_units"] / s["stake_units"] if s["stake_units"] else 0.0
        s["trust"] = s.pop("trust_sum") / s["epochs_active"] if s["epochs_active"] else 0.0
    return list(out.values())


def vs_honest_per_epoch(accounts: pa.Table) -> dict[str, dict[int, float | None]]:
    """Per group but honest (scenario order) and epoch: its tokens per accepted row as a share of honest groups' in
    that epoch (None: it landed no rows, or honest earned nothing). Shows when a strategy earns, not only how much."""
    units: dict[tuple[str, int], int] = defaultdict(int)
    rows: dict[tuple[str, int], int] = defaultdict(int)
    honest_units: dict[int, int] = defaultdict(int)
    honest_rows: dict[int, int] = defaultdict(int)
    groups: dict[str, None] = {}
    records = accounts.to_pylist()
    for r in records:
        if r["strategy"] == "honest":
            honest_units[r["epoch"]] += r["amount_units"]
            honest_rows[r["epoch"]] += r["rows_accepted"]
            continue
        groups[r["group"]] = None
        units[(r["group"], r["epoch"])] += r["amount_units"]
        rows[(r["group"], r["epoch"])] += r["rows_accepted"]
    epochs = sorted({r["epoch"] for r in records})
    out: dict[str, dict[int, float | None]] = {}
    for g in groups:
        out[g] = {}
        for e in epochs:
            honest = honest_units[e] / honest_rows[e] if honest_rows[e] else 0.0
            out[g][e] = units[(g, e)] / rows[(g, e)] / honest if rows[(g, e)] and honest else None
    return out


def per_group_epoch(accounts: pa.Table) -> dict[str, dict[int, float]]:
    """Tokens per player (a sybil's keys together are one player), per group and epoch."""
    totals: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    players: dict[str, set] = defaultdict(set)
    for r in accounts.to_pylist():
        totals[r["group"]][r["epoch"]] += r["amount_units"] / UNITS_PER_TOKEN
        players[r["group"]].add(r["player"])
    return {g: {e: v / len(players[g]) for e, v in sorted(es.items())} for g, es in totals.items()}


def write_outputs(result: SimulationResult) -> Path:
    """accounts.parquet, validators.parquet, the charts and report.md into result.out; returns report.md's path."""
    out = result.out
    pq.write_table(result.accounts, out / ACCOUNTS_FILE)
    pq.write_table(result.validators, out / VALIDATORS_FILE)
    _charts(result)
    path = out / "report.md"
    path.write_text(_markdown(result))
    return path


def _charts(result: SimulationResult) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = per_group_epoch(result.accounts)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for group, points in series.items():
        ax.plot(list(points), list(points.values()), marker="o", label=group)
    ax.set_xlabel("epoch")
    ax.set_ylabel("tokens earned per player")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Earnings per strategy over epochs")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(result.out / CHARTS[0], dpi=100)
    plt.close(fig)

    summary = contributor_summary(result.accounts)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar([s["group"] for s in summary], [s["tokens_per_row"] for s in summary], color="tab:blue")
    ax.set_ylabel("tokens per accepted row")
    ax.set_title("Earnings per accepted row, per strategy (all epochs)")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(result.out / CHARTS[1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    per: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in result.validators.to_pylist():
        if r["active"] and r["stake_units"]:
            per[r["group"]][r["epoch"]].append(r["amount_units"] / r["stake_units"])
    for group, points in per.items():
        ax.plot(list(points), [sum(v) / len(v) for v in points.values()], marker="o", label=group)
    ax.set_xlabel("epoch")
    ax.set_ylabel("tokens earned per staked token")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Validator earnings per unit of stake (active epochs)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(result.out / CHARTS[2], dpi=100)
    plt.close(fig)


def _fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}g}" if abs(v) < 1e-3 and v else f"{v:,.{digits}f}"


def _markdown(result: SimulationResult) -> str:
    sc = result.scenario
    lines = [
        f"# Simulated market: {Path(sc.file).name}",
        "",
        f"{result.epochs} epochs, seed {result.seed}, dataset `{sc.dataset}` (task `{sc.task_name}`, k = {sc.task.k}, "
        f"scaling {sc.task.scaling}), holdout {sc.holdout_fraction:.0%}; market overrides: "
        + (", ".join(f"{k} = {v!r}" for k, v in sorted(sc.market.items())) or "none") + ".",
        f"{result.submissions} dataset submissions; {result.synthesized_rows} fresh rows were synthesized "
        "(interpolated between two real rows of one class) after the real supply ran out.",
        f"The market's home (ledger, lake, archive) is `{result.home}`: ask it more with "
        f"`tributary --home {result.home} sql \"...\"`.",
        "",
        "## Contributors",
        "",
        "| group | strategy | keys | rows sent | accepted | duplicates | quarantined | value | tokens | tokens / accepted row | vs honest |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in contributor_summary(result.accounts):
        vs = "" if s["vs_honest"] is None else f"{s['vs_honest']:.1%}"
        lines.append(f"| {s['group']} | {s['strategy']} | {s['keys']} | {s['rows_sent']} | {s['rows_accepted']} | "
                     f"{s['duplicate_rows']} | {s['rows_quarantined']} | {_fmt(s['value'])} | {s['tokens']:,.3f} | "
                     f"{s['tokens_per_row']:.4f} | {vs} |")
    per_epoch = vs_honest_per_epoch(result.accounts)
    if per_epoch:
        lines += ["", "Per epoch, each strategy's tokens per accepted row as a share of honest contributors' in the "
                  "same epoch (blank: no rows landed, or honest earned nothing):", "",
                  "| epoch | " + " | ".join(per_epoch) + " |", "| ---: |" + " ---: |" * len(per_epoch)]
        for e in next(iter(per_epoch.values())):
            lines.append(f"| {e} | " + " | ".join("" if g[e] is None else f"{g[e]:.1%}" for g in per_epoch.values())
                         + " |")
    lines += ["", f"![earnings per strategy over epochs]({CHARTS[0]})", "",
              f"![earnings per accepted row]({CHARTS[1]})", "", "## Validators", "",
              "| group | strategy | validators | epochs active | tokens | tokens per staked token | mean trust |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in validator_summary(result.validators):
        lines.append(f"| {s['group']} | {s['strategy']} | {s['validators']} | {s['epochs_active']} | "
                     f"{s['tokens']:,.3f} | {s['per_stake']:.5f} | {s['trust']:.3f} |")
    total = sum(result.epoch_seconds)
    lines += ["", f"![validator earnings per stake]({CHARTS[2]})", "", "## Time", "",
              f"Setup {result.setup_seconds:.1f} s; {len(result.epoch_seconds)} epochs in {total:.1f} s "
              f"({total / max(1, len(result.epoch_seconds)):.2f} s per epoch).", "",
              "| stage | seconds | share |", "| --- | ---: | ---: |"]
    for stage, secs in result.stage_seconds.items():
        lines.append(f"| {stage} | {secs:.2f} | {secs / total if total else 0:.0%} |")
    lines += ["", "## Files", "",
              f"- `{ACCOUNTS_FILE}`: one row per contributor key and epoch ({', '.join(ACCOUNT_SCHEMA.names)})",
              f"- `{VALIDATORS_FILE}`: one row per validator and epoch ({', '.join(VALIDATOR_SCHEMA.names)})",
              "- amounts are base units (1 token = 10^9 units); `value` is the ledger's KNN-Shapley value", ""]
    return "\n".join(lines)
