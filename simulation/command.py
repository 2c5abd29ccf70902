"""What `tributary simulate` prints around a simulation run (the CLI command is a thin wrapper over this)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from simulation.scenario import load_scenario


def run_command(console: Console, scenario_file: Path, *, epochs: int | None, seed: int | None,
                out: Path | None) -> Path:
    """Check the scenario, run it, print the per-strategy figures and where the report is; returns report.md."""
    from simulation.market import simulate
    from simulation.report import contributor_summary, validator_summary

    scenario = load_scenario(scenario_file)  # ScenarioError (file, key, rule) before anything is made
    out = out or Path(f"simulate-{Path(scenario_file).stem}")
    result = simulate(scenario, epochs=epochs, seed=seed, out=out,
                      progress=lambda msg: console.print(msg, highlight=False))
    grid = Table(title="contributors: tokens per accepted row", title_justify="left")
    for col in ("group", "strategy", "keys", "rows sent", "accepted", "duplicates", "tokens", "per row", "vs honest"):
        grid.add_column(col, justify="left" if col in ("group", "strategy") else "right")
    for s in contributor_summary(result.accounts):
        grid.add_row(s["group"], s["strategy"], str(s["keys"]), str(s["rows_sent"]), str(s["rows_accepted"]),
                     str(s["duplicate_rows"]), f"{s['tokens']:,.3f}", f"{s['tokens_per_row']:.4f}",
                     "" if s["vs_honest"] is None else f"{s['vs_honest']:.1%}")
    console.print(grid)
    grid = Table(title="validators: tokens per staked token (active epochs)", title_justify="left")
    for col in ("group", "strategy", "validators", "epochs active", "tokens", "per stake", "trust"):
        grid.add_column(col, justify="left" if col in ("group", "strategy") else "right")
    for s in validator_summary(result.validators):
        grid.add_row(s["group"], s["strategy"], str(s["validators"]), str(s["epochs_active"]), f"{s['tokens']:,.3f}",
                     f"{s['per_stake']:.5f}", f"{s['trust']:.3f}")
    console.print(grid)
    total = sum(result.epoch_seconds)
    split = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
    console.print(f"{len(result.epoch_seconds)} epochs in {total:.1f} s ({split})", highlight=False)
    console.print(f"report: {result.report}", highlight=False)
    return result.report
