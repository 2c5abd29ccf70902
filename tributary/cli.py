"""`tributary`: the command line of the market, for contributors, validators, operators and analysts."""

# No `from __future__ import annotations` here: typer reads every command's annotations on every run, and string
# annotations cost it an eval each (start-up time, issue 20).
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

# Typer builds pydantic adapters for options; pydantic would then scan every installed package's entry points for
# plugins on each start (Tributary uses none): about 10 ms of every command.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer  # noqa: E402
from rich.table import Table

from tributary.console import CliConsole  # tables keep every column when output is piped

console = CliConsole()
err_console = CliConsole(stderr=True)

app = typer.Typer(help="Tributary: a data-contribution market. Submit signed data, earn tokens for its measured value.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
task_app = typer.Typer(help="Define tasks: their schema, ranges and hidden holdout.", no_args_is_help=True)
epoch_app = typer.Typer(help="Run and settle epochs without Dagster.", no_args_is_help=True)
consensus_app = typer.Typer(help="Yuma Consensus tools.", no_args_is_help=True)
app.add_typer(task_app, name="task")
app.add_typer(epoch_app, name="epoch")
app.add_typer(consensus_app, name="consensus")
request_app = typer.Typer(help="Signed requests that need their own subcommand (open registration).",
                          no_args_is_help=True)
app.add_typer(request_app, name="request")

WORKSPACE_YAML = """load_from:
  - python_module:
      module_name: assets.definitions
      location_name: tributary
"""

HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="Market home (default: $TRIBUTARY_HOME, else ./data).")]


_global_home: Optional[Path] = None


@app.callback()
def _main_options(home: HomeOpt = None) -> None:
    """Tributary: a data-contribution market. Submit signed data, earn tokens for its measured value."""
    global _global_home
    _global_home = home


def _home(home: Optional[Path]):
    from engine.home import open_home

    return open_home(home or _global_home)


def _existing_home(home: Optional[Path]):
    """For read-only commands: a home that exists, opened without creating, migrating or writing anything."""
    from engine.home import existing_home

    return existing_home(home or _global_home)


# ---------------------------------------------------------------------------------------------------- contributors
@app.command()
def keygen(name: str, home: HomeOpt = None) -> None:
    """Make an Ed25519 key keys/NAME.key (mode 0600) and print its public key."""
    from engine import actions
    from engine.errors import TributaryError
    from engine.home import existing_home

    try:  # a key needs no ledger: an existing home is not opened; a new one is set up first (DuckDB, genesis)
        h = existing_home(home or _global_home)
    except TributaryError:
        h = _home(home)
    console.print(actions.keygen(h, name))


@app.command()
def register(
    name: str,
    role: Annotated[str, typer.Option(help="contributor (sends data) or validator (stakes and sends weights).")],
    fee_from: Annotated[Optional[str], typer.Option(help="The account whose liquid tokens pay the registration "
                                                         "fee, when registration_fee_units is above 0.")] = None,
    public_key: Annotated[Optional[str], typer.Option(help="The key's Ed25519 public key, 64 hex characters, sent "
                                                           "by a contributor who keeps its secret on its own "
                                                           "machine (docs/PROTOCOL.md §1); default: read "
                                                           "keys/NAME.key.")] = None,
    home: HomeOpt = None,
) -> None:
    """Register the key NAME in the ledger as a contributor or validator (an operator command)."""
    from engine import actions

    account = actions.register(_home(home), name, role, fee_from=fee_from, public_key=public_key)
    console.print(f"registered {name} as {account.role}: account {account.account_id} (epoch {account.registered_epoch})")


@app.command()
def validate(
    file: Path,
    task: Annotated[Optional[str], typer.Option(help="Task name (tasks/TASK.toml in the home).")] = None,
    task_card: Annotated[Optional[Path], typer.Option(
        "--task-card", help="A published task card (T.json from `tributary task publish`): no home needed.")] = None,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    home: HomeOpt = None,
) -> None:
    """Dry-run a file against a task's rules, exactly as ingest will (read, cast, stats, GX); exits 1 if it would fail.

    Give the task by name (--task, from the home) or by its published card (--task-card, on any machine)."""
    from quality.gate import check_file

    if format not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, got {format!r}")
    if (task is None) == (task_card is None):
        raise typer.BadParameter("give exactly one of --task (a task of the home) and --task-card (a published card)")
    if task_card is not None:  # a card alone: no home is opened, created or needed
        from protocol.files import MAX_PAYLOAD_BYTES
        from quality.task_card import card_from_json, card_max_payload_bytes
        from engine.errors import MissingFileError

        try:
            text = task_card.read_bytes()
        except OSError as e:
            raise MissingFileError(f"{task_card}: cannot read the task card ({e.strerror or e})") from None
        card, t = card_from_json(text, file=str(task_card))
        max_bytes = card_max_payload_bytes(card, MAX_PAYLOAD_BYTES)
        task = t.name
    else:
        from quality.task_toml import load_task

        h = _home(home)
        t = load_task(h.paths.tasks / f"{task}.toml")
        max_bytes = h.settings.max_payload_bytes
    report = check_file(file, t, max_bytes=max_bytes)
    if format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        grid = Table(title=f"{file.name} against task {task}: {report.rows} rows")
        for col in ("expectation", "column", "observed", "result", "rule", "detail"):
            grid.add_column(col)
        for line in report.lines:
            result = "[green]pass[/]" if line.success else ("[red]FAIL[/]" if line.hard else "[yellow]FLAG[/]")
            grid.add_row(line.expectation, line.column or "", line.observed, result,
                         "hard" if line.hard else "profile", line.detail)
        console.print(grid)
        if report.suspicious:
            verdict = "rejected: the task sets reject_suspicious" if t.reject_suspicious else "accepted, but flagged"
            console.print(f"[yellow]suspicious columns (far outside the holdout profile; {verdict}): "
                          f"{', '.join(report.suspicious)}[/]")
        if task_card is not None:
            note = ("the task REJECTS suspicious submissions (reject_suspicious = true): ingest may still refuse a "
                    "file far outside it" if t.reject_suspicious else "ingest only flags such files (reject_suspicious "
                    "= false)")
            console.print(f"[dim]the holdout profile is not published on a card, so 'suspicious' was not checked; "
                          f"{note}[/]")
    if not report.success:
        err_console.print(f"[red]{file}: would be quarantined (quality_failed): {report.summary()}[/]",
                          soft_wrap=True)
        raise typer.Exit(1)
    if format == "table":
        hard = sum(line.hard for line in report.lines)
        console.print(f"[green]{file}: passes all {hard} hard rules of task {task}[/]")


@app.command()
def submit(
    file: Path,
    key: Annotated[str, typer.Option(help="Name of the key that signs (keys/KEY.key).")],
    task: Annotated[Optional[str], typer.Option(help="Task the data is for (not needed for weights).")] = None,
    kind: Annotated[str, typer.Option(help="dataset, predictions or weights.")] = "dataset",
    home: HomeOpt = None,
) -> None:
    """Sign FILE and drop it, with its manifest, into the drop folder (atomically, manifest last)."""
    from engine import actions
    from engine.home import existing_home

    # Signing needs the key and drop/ only: the ledger is not opened, and a home that does not exist is an error.
    path, manifest = actions.submit(existing_home(home or _global_home), file, key=key, task=task, kind=kind)
    console.print(f"submitted {file.name} as {path.name} (kind {kind}, nonce {manifest.nonce}, digest {manifest.digest[:16]}…)")


# ---------------------------------------------------------------------------------------------------- validators
@app.command()
def commit(
    file: Annotated[Path, typer.Argument(help='JSON {"weights": {contributor_public_key: weight, ...}}.')],
    key: Annotated[str, typer.Option(help="The validator's key.")],
    home: HomeOpt = None,
) -> None:
    """Commit-reveal, step 1: submit a salted hash of your weights for the open epoch; reveal them next epoch."""
    from pipelines.weights import WeightsRejected, check_weight_values
    from engine import actions
    from engine.errors import TributaryError

    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON: the user's file
        raise TributaryError(f"{file}: cannot read it as JSON ({e})") from None
    weights = doc.get("weights") if isinstance(doc, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise TributaryError(f'{file}: expected a JSON object with a non-empty "weights" object')
    try:  # refuse now what ingest would quarantine at the reveal, an epoch later
        check_weight_values(weights, str(file))
    except WeightsRejected as e:
        raise TributaryError(e.detail) from None
    epoch, commitment = actions.commit(_home(home), weights, key=key)
    console.print(f"committed {commitment[:16]}… for epoch {epoch}; run `tributary reveal --key {key}` in epoch {epoch + 1}")


@app.command()
def reveal(
    key: Annotated[str, typer.Option(help="The validator's key.")],
    home: HomeOpt = None,
) -> None:
    """Commit-reveal, step 2: submit the weights and salt committed in an earlier epoch; they count in this one."""
    from engine import actions

    epochs = actions.reveal(_home(home), key=key)
    console.print(f"revealed the weights committed in epoch(s) {', '.join(map(str, epochs))}")



def _request(action: str, amount: Optional[str], key: str, home: Optional[Path], to: Optional[str] = None,
             **fields: object) -> None:
    from ledger.money import units_to_tokens
    from engine import actions
    from engine.home import existing_home

    path, units = actions.request(existing_home(home or _global_home), action, amount, key=key, to=to, **fields)
    what = f"{action} of {units_to_tokens(units)} tokens" if units is not None else \
        f"{action} {' '.join(f'{k}={v}' for k, v in fields.items())}"
    console.print(f"{key}: signed {what}{f' to {to}' if to else ''} as {path.name}; it applies when the next "
                  f"ingest lands it (see `tributary sql \"SELECT * FROM requests\"`)", highlight=False)


def _own_account(name: str, key: str) -> None:
    if name != key:
        from engine.errors import TributaryError

        raise TributaryError(f"{name}: you can stake and unstake only your own account ({key}); delegation is not "
                             "supported")


def _own_tokens_command(action: str, doc: str) -> None:
    """Register `tributary stake|unstake NAME AMOUNT --key NAME`: a signed request about the signer's own stake."""

    def command(
        name: str,
        amount: Annotated[str, typer.Argument(help="Tokens, e.g. 100 or 12.5.")],
        key: Annotated[str, typer.Option(help="The key that signs: NAME's own key.")],
        home: HomeOpt = None,
    ) -> None:
        _own_account(name, key)
        _request(action, amount, key, home)

    command.__doc__ = doc
    app.command(action)(command)


_own_tokens_command("stake", "Signed request: move liquid tokens of NAME to its stake; stake counts from the epoch "
                             "after it lands.")
_own_tokens_command("unstake", "Signed request: unstake tokens of NAME; they leave stake at once and are liquid "
                               "after the cooldown.")


@app.command()
def transfer(
    to: Annotated[str, typer.Argument(help="The recipient: an account name, id or public key.")],
    amount: Annotated[str, typer.Argument(help="Tokens, e.g. 100 or 12.5.")],
    key: Annotated[str, typer.Option(help="The key that signs and pays.")],
    home: HomeOpt = None,
) -> None:
    """Signed request: send liquid tokens to another registered account."""
    _request("transfer", amount, key, home, to=to)


@app.command("auto-stake")
def auto_stake(
    choice: Annotated[str, typer.Argument(help="on: your rewards land in your stake; off: in your liquid balance.")],
    key: Annotated[str, typer.Option(help="The contributor's key that signs.")],
    home: HomeOpt = None,
) -> None:
    """Signed request: a contributor's rewards compound into its stake from the next settlement on (or stop)."""
    if choice not in ("on", "off"):
        raise typer.BadParameter(f"must be on or off, got {choice!r}")
    _request("auto_stake", None, key, home, enabled=choice == "on")


@app.command()
def propose(
    setting: Annotated[str, typer.Argument(help="A governed setting (README: Governance by stake), e.g. kappa or "
                                                "task.digits.open.")],
    value: Annotated[str, typer.Argument(help="Its new value as JSON: 0.4, 2000000000000, false.")],
    key: Annotated[str, typer.Option(help="A staked validator's key that signs.")],
    home: HomeOpt = None,
) -> None:
    """Signed request: propose a governed setting's value; tallied by stake when this epoch settles."""
    _request("propose", None, key, home, setting=setting, value=value)


@app.command()
def vote(
    proposal_id: int,
    choice: Annotated[str, typer.Argument(help="yes or no.")],
    key: Annotated[str, typer.Option(help="A staked key that signs.")],
    home: HomeOpt = None,
) -> None:
    """Signed request: vote on a proposal of the open epoch; the latest vote of each key counts."""
    if choice not in ("yes", "no"):
        raise typer.BadParameter(f"must be yes or no, got {choice!r}")
    _request("vote", None, key, home, proposal_id=proposal_id, vote=choice)


@request_app.command("register")
def request_register(
    key: Annotated[str, typer.Option(help="The key that registers itself (keys/KEY.key) and signs.")],
    role: Annotated[str, typer.Option(help="contributor (sends data) or validator (stakes and sends weights).")],
    name: Annotated[Optional[str], typer.Option(help="The account's name (default: KEY).")] = None,
    epoch: Annotated[Optional[int], typer.Option(help="The epoch the proof of work is bound to (default: the "
                                                      "open epoch; the one before it is accepted too).")] = None,
    home: HomeOpt = None,
) -> None:
    """Signed request: register KEY itself on a market with registration = "open", with a proof of work over its
    public key and the epoch (docs/PROTOCOL.md §6, register)."""
    from engine import actions
    from engine.home import existing_home

    path, at, pow_nonce, bits = actions.request_register(existing_home(home or _global_home), key=key, role=role,
                                                         name=name, epoch=epoch)
    console.print(f"{key}: signed register as {role} (proof: epoch {at}, pow_nonce {pow_nonce}, {bits} bits) as "
                  f"{path.name}; the key is registered when the next ingest lands it", highlight=False)


@app.command()
def grant(
    name: str,
    amount: Annotated[str, typer.Argument(help="Tokens to mint into NAME's liquid balance.")],
    home: HomeOpt = None,
) -> None:
    """Operator: mint tokens from the emission account to account NAME (e.g. a validator's initial stake)."""
    from engine import actions

    actions.grant(_home(home), name, amount)
    console.print(f"granted {amount} tokens to {name}")


# ---------------------------------------------------------------------------------------------------- operators
@task_app.command("init")
def task_init(
    name: str,
    holdout: Annotated[Path, typer.Option(help="Parquet file of labelled rows kept hidden from contributors.")],
    label: Annotated[str, typer.Option(help="The label column.")],
    labels: Annotated[Optional[str], typer.Option(
        help="Comma-separated labels to allow besides those the holdout shows, e.g. 0,1,2.")] = None,
    bound: Annotated[Optional[list[str]], typer.Option(
        help="Declare hard bounds COL=LO:HI (repeatable; COL '*' for every feature).")] = None,
    challenge: Annotated[Optional[Path], typer.Option(
        help="Labelled rows to open predictions on: features published, labels kept hidden.")] = None,
    scaling: Annotated[str, typer.Option(
        help="How valuation scales features by the holdout before distances: standard, range or none.")] = "standard",
    home: HomeOpt = None,
) -> None:
    """Write tasks/NAME.toml from a holdout: columns, types, labels and a profile; hard bounds only as declared."""
    from engine import actions

    h = _home(home)
    extra = [v.strip() for v in labels.split(",") if v.strip()] if labels else []
    task = actions.task_init(h, name, holdout, label, extra_labels=extra, bounds=_parse_bounds(bound or []),
                             challenge=challenge, scaling=scaling)
    grid = Table(title=f"wrote {h.paths.tasks / f'{name}.toml'}")
    for col in ("rule", "column", "value", "kind"):
        grid.add_column(col)
    grid.add_row("schema", "", f"{len(task.features)} features + label {task.label!r} ({task.label_dtype})", "hard")
    grid.add_row("finite, non-null", "every feature", "no NaN, inf or null", "hard")
    grid.add_row("row count", "", f"{task.min_rows}..{task.max_rows}", "hard")
    grid.add_row("label domain", task.label, ", ".join(map(str, task.label_domain)), "hard")
    grid.add_row("valuation", "", f"exact KNN-Shapley, k={task.k}, features scaled '{task.scaling}'; a row within "
                 f"{task.near_duplicate_tol:g} (standardized) of any earlier row is a duplicate", "value")
    for f in task.features:
        if f.min is not None or f.max is not None:
            lo = "-inf" if f.min is None else f"{f.min:g}"
            hi = "inf" if f.max is None else f"{f.max:g}"
            grid.add_row("declared bounds", f.name, f"[{lo}, {hi}]", "hard")
    for p in task.profile:
        lo, hi = p.band()
        grid.add_row("profile", p.name, f"q01 {p.q01:g}, q50 {p.q50:g}, q99 {p.q99:g}; far outside [{lo:g}, {hi:g}]",
                     "profile")
    console.print(grid)
    console.print(f"profile rules only flag a submission 'suspicious' (reject_suspicious = {str(task.reject_suspicious).lower()}); "
                  f"the holdout is kept hidden at {task.holdout}")
    if task.challenge:
        console.print(f"predictions are open: challenge rows published at {task.challenge} (columns "
                      f"{', '.join(task.prediction_columns()[:3])}, ... in a predictions file)")


@task_app.command("show")
def task_show(
    name: str,
    format: Annotated[str, typer.Option("--format", help="table or json (the card as `task publish` writes it).")]
    = "table",
    home: HomeOpt = None,
) -> None:
    """Print task NAME's public card: what a contributor needs (columns, types, labels, bounds, row limits, ...)."""
    from engine import actions

    if format not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, got {format!r}")
    card = actions.task_card_of(_existing_home(home), name)
    if format == "json":
        from quality.task_card import card_to_json

        sys.stdout.write(card_to_json(card))
        return
    _print_card(card)


def _print_card(card: dict) -> None:
    state = "open" if card["open"] else "CLOSED by governance (submissions are quarantined task_closed)"
    grid = Table(title=f"task {card['name']} (card v{card['card_version']}, epoch {card.get('epoch', '?')}): {state}")
    for col in ("field", "column", "value"):
        grid.add_column(col)
    grid.add_row("kinds", "", ", ".join(card["kinds"]))
    for f in card["features"]:
        lo, hi = f.get("min"), f.get("max")
        bounds = "" if lo is None and hi is None else \
            f"; bounds [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        grid.add_row("feature", f["name"], f"{f['dtype']}, finite, non-null{bounds}")
    grid.add_row("label", card["label"], f"{card['label_dtype']}, one of {', '.join(map(str, card['label_domain']))}")
    grid.add_row("rows", "", f"{card['min_rows']}..{card['max_rows']}")
    if "max_payload_bytes" in card:
        grid.add_row("max payload", "", f"{card['max_payload_bytes']} bytes")
    v = card["valuation"]
    grid.add_row("valuation", "", f"{v['method']}, k={v['k']}, scaling {v['scaling']}, near-duplicate tolerance "
                                  f"{v['near_duplicate_tol']:g}")
    grid.add_row("suspicious", "", card["suspicious"]["rule"] + " (the profile itself is not published)")
    if card.get("challenge"):
        c = card["challenge"]
        grid.add_row("challenge", "", f"{c['rows']} rows in {c['file']}; predictions have columns "
                                      f"{', '.join(c['prediction_columns'])}")
    console.print(grid)


@task_app.command("publish")
def task_publish(
    out: Annotated[Path, typer.Argument(help="Folder to write DIR/T.json (and DIR/T.challenge.parquet) into.")],
    home: HomeOpt = None,
) -> None:
    """Publish every task's public card as DIR/T.json (and a prediction task's challenge rows), atomically."""
    from engine import actions

    for path in actions.publish_task_cards(_existing_home(home), out):
        console.print(str(path), highlight=False)


def _parse_bounds(specs: list[str]) -> dict[str, tuple[float, float]]:
    """--bound COL=LO:HI options as a mapping; BadParameter naming the option that does not parse."""
    out: dict[str, tuple[float, float]] = {}
    for spec in specs:
        col, sep, rng = spec.partition("=")
        lo, sep2, hi = rng.partition(":")
        try:
            if not (col and sep and sep2):
                raise ValueError
            out[col.strip()] = (float(lo), float(hi))
        except ValueError:
            raise typer.BadParameter(f"--bound {spec!r}: expected COL=LO:HI, e.g. px_3=0:16 or '*=0:16'") from None
    return out


@epoch_app.command("run")
def epoch_run(
    close: Annotated[bool, typer.Option("--close", help="Also settle the epoch now and open the next one.")] = False,
    close_when_due: Annotated[bool, typer.Option(
        "--close-when-due", help="Settle only if the open epoch has lasted epoch_seconds (for cron).")] = False,
    epoch: Annotated[Optional[int], typer.Option(
        "--epoch", help="Act on this epoch only: if it is settled already, say so and do nothing (safe to rerun).")] = None,
    home: HomeOpt = None,
) -> None:
    """Ingest, validate and score the drop folder for the open epoch; --close settles it too."""
    from engine.epoch import epoch_is_due, run_epoch, settled_already
    from tributary.report import print_epoch_run

    h = _home(home)
    if epoch is not None:
        done = settled_already(h, epoch)
        if done:
            console.print(done, highlight=False)
            return
    if close_when_due and not close:
        close, why = epoch_is_due(h)
        console.print(why, highlight=False)
    print_epoch_run(console, h, run_epoch(h, close=close))


@app.command()
def sql(
    query: str,
    format: Annotated[str, typer.Option("--format", help="table, csv or json (an array of row objects).")] = "table",
    home: HomeOpt = None,
) -> None:
    """Run a read-only SQL query on the ledger."""
    from ledger.queries import run_sql

    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    import duckdb

    from engine.errors import TributaryError

    try:
        result = run_sql(_existing_home(home).paths.ledger, query)
    except duckdb.Error as e:
        raise TributaryError(f"the query failed: {e}") from None
    err_console.print(f"[dim]({result.source})[/]", highlight=False)
    if format == "json":
        rows = [dict(zip(result.columns, r)) for r in result.rows]
        sys.stdout.write(json.dumps(rows, default=str, indent=1) + "\n")
    elif format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")  # the csv module's default ends lines with \r\n
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        sys.stdout.write(buf.getvalue())
    else:
        grid = Table(*result.columns)
        for row in result.rows:
            grid.add_row(*("" if v is None else str(v) for v in row))
        console.print(grid)


@app.command()
def audit(home: HomeOpt = None) -> None:
    """Recompute the hash chain and check the ledger's invariants; exits 1 naming what broke."""
    from ledger.audit import audit as run_audit
    from ledger.db import open_ledger

    from engine.stages.lake_state import audit_views

    h = _existing_home(home)
    with open_ledger(h.paths.ledger, read_only=True) as con:
        report = run_audit(con)
    views, view_problems = audit_views(h)
    if report.ok and not view_problems:
        console.print(f"[green]ledger OK: {report.epochs_checked} epochs chained, {report.transfers_checked} transfers "
                      "balance, payouts equal emission, no negative balance[/]")
        console.print(f"[green]valuation state OK: {views} kept lake views equal a rebuild from the lake[/]")
        return
    for problem in [*report.problems, *view_problems]:
        err_console.print(f"[red]{problem}[/]")
    raise typer.Exit(1)


@app.command()
def exclude(
    submission_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the submission's quarantine row.")],
    home: HomeOpt = None,
) -> None:
    """Quarantine an accepted submission of an unsettled epoch as operator_excluded (nothing is deleted).

    The way out of a failing blocking check: exclude the submission, then run the epoch (or its partition) again."""
    from engine.epoch import exclude as run_exclude

    epoch = run_exclude(_existing_home(home), submission_id, reason)
    console.print(f"submission {submission_id} of epoch {epoch} is quarantined as operator_excluded; "
                  "run the epoch again to settle it without this submission", highlight=False)


@app.command()
def export(
    out: Path,
    public: Annotated[bool, typer.Option("--public", help="Only what any contributor may see, with a manifest "
                                         "signed by the operator key: what `tributary verify` checks.")] = False,
    home: HomeOpt = None,
) -> None:
    """Export every ledger table as Parquet, plus a DuckDB file the DuckDB CLI can open (--public: the public
    ledger and its signed manifest, README "Verify the books yourself")."""
    if public:
        from engine.keys import operator_key, public_hex, signer
        from ledger.public import public_export

        h = _existing_home(home)
        key = operator_key(h.paths.keys)
        paths = public_export(h.paths.ledger, out, operator_public_key=public_hex(key), sign=signer(key))
    else:
        from ledger.queries import export as run_export

        paths = run_export(_existing_home(home).paths.ledger, out)
    for path in paths:
        console.print(str(path))


@app.command("operator-key")
def operator_key_command(home: HomeOpt = None) -> None:
    """Print the operator's public key (hex): what contributors pin with `tributary verify --operator-key`."""
    from engine.keys import operator_key, public_hex

    print(public_hex(operator_key(_existing_home(home).paths.keys)))


@app.command()
def verify(
    export_dir: Path,
    operator_key: Annotated[Optional[str], typer.Option("--operator-key", help="The operator's public key (hex) "
                            "every signature must verify under (default: the key the export names).")] = None,
    submission: Annotated[Optional[str], typer.Option("--submission", help="Also check one submission's record, "
                          "value and pay.")] = None,
) -> None:
    """Recompute a public export's hash chain, digests, money invariants and signatures from its files alone;
    exits 1 with one line per problem."""
    from engine.errors import VerificationFailed
    from engine.keys import parse_public_hex
    from ledger.public import check_submission, verify_export

    key = parse_public_hex(operator_key, option="--operator-key") if operator_key is not None else None
    report = verify_export(export_dir, operator_key=key)
    problems = list(report.problems)
    found = check_submission(export_dir, submission) if submission else None
    if found is not None:
        problems.extend(found.problems)
    for problem in problems:
        err_console.print(f"[red]{problem}[/]", highlight=False, soft_wrap=True)
    if problems:
        raise VerificationFailed(f"{export_dir}: {len(problems)} problem(s) found; the export does not verify")
    unsigned = f", {len(report.unsigned)} unsigned (settled before signatures)" if report.unsigned else ""
    pinned = "" if key else " (the key the export names; pin it with --operator-key)"
    console.print(f"export OK: {report.epochs_checked} epochs chained, {report.transfers_checked} transfers balance, "
                  f"payouts equal emission, {report.tables_checked} tables match the manifest; {report.signed} epochs "
                  f"signed by operator {report.operator_public_key}{pinned}{unsigned}", highlight=False, soft_wrap=True)
    if found is not None:
        console.print(f"submission {found.submission_id}: epoch {found.epoch}, account {found.account_id}, "
                      f"status {found.status}{f' ({found.reason})' if found.reason else ''}, value {found.value}, "
                      f"account paid {found.amount} units that epoch (explain: value {found.explain_value})",
                      highlight=False, soft_wrap=True)


@app.command()
def status(
    key: Annotated[str, typer.Option("--key", help="A key name in the home's keys/ or a public key (hex).")],
    from_dir: Annotated[Optional[Path], typer.Option("--from", help="Read a public export folder instead of the "
                        "home's ledger.")] = None,
    home: HomeOpt = None,
) -> None:
    """List a key's submissions: status, reason, value, and what its account was paid each epoch."""
    from ledger.public import KEY_STATUS_COLUMNS, key_status

    if len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
        public_key = key.lower()
    else:
        from engine.keys import load, public_hex

        public_key = public_hex(load(_existing_home(home).paths.keys, key))
    if from_dir is not None:
        from ledger.public import load_export

        con = load_export(from_dir)
        try:
            rows = key_status(con, public_key)
        finally:
            con.close()
    else:
        from ledger.db import open_ledger, snapshot_path

        ledger = _existing_home(home).paths.ledger
        snapshot = snapshot_path(ledger)
        with open_ledger(snapshot if snapshot.exists() else ledger, read_only=True) as con:
            rows = key_status(con, public_key)
    if not rows:
        console.print(f"no submissions from key {public_key}", highlight=False)
        return
    grid = Table(*KEY_STATUS_COLUMNS[:-2], "pay")
    for row in rows:
        *shown, settled, pay = row
        grid.add_row(*("" if v is None else str(v) for v in shown),
                     str(pay or 0) if settled else "(unsettled)")
    console.print(grid)


def _sync_dagster(h) -> None:
    """Mirror the ledger into the home's Dagster instance before the UI starts: its first page shows every epoch.
    A process of its own, so the CLI never imports Dagster or the assets."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "assets.sync", str(h.root)], stdout=subprocess.PIPE, text=True)
    console.print(done.stdout.strip(), highlight=False)
    if done.returncode != 0:
        raise typer.Exit(done.returncode)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port of the Dagster webserver.")] = 3000,
    host: Annotated[str, typer.Option(help="Host to bind.")] = "127.0.0.1",
    home: HomeOpt = None,
) -> None:
    """Start the Dagster webserver and daemon on the home's Dagster instance (stop with Ctrl-C)."""
    import os
    import signal

    h = _home(home)
    env = dict(os.environ, TRIBUTARY_HOME=str(h.root), DAGSTER_HOME=str(h.paths.dagster))
    # A workspace file pins the code location's name: sensor cursors and schedule state are kept per name.
    workspace = h.paths.dagster / "workspace.yaml"
    workspace.write_text(WORKSPACE_YAML)
    _sync_dagster(h)
    # Started from a script, SIGINT may be inherited as ignored, which makes dagster dev unstoppable.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    dagster = str(Path(sys.executable).with_name("dagster"))
    os.execve(dagster, [dagster, "dev", "-w", str(workspace), "-h", host, "-p", str(port)], env)


@app.command()
def demo(
    home: HomeOpt = None,
    keep: Annotated[bool, typer.Option(help="Reuse an existing demo home instead of starting fresh.")] = False,
) -> None:
    """Build a fresh market on bundled data, run two epochs and show who earned what and why."""
    from tributary.demo import run_demo
    from engine.settings import resolve_home

    run_demo(console, resolve_home(home or _global_home), fresh=not keep)


@app.command()
def simulate(
    scenario: Path,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs to run (default: the file's `epochs`).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of every random stream (default: the file's `seed`).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: ./simulate-<scenario name>).")] = None,
) -> None:
    """Simulate a market from a scenario file (README: "Simulate a market"); writes report.md, PNG charts, Parquet."""
    from simulation.command import run_command

    run_command(console, scenario, epochs=epochs, seed=seed, out=out)


@consensus_app.command("replay")
def consensus_replay(file: Path) -> None:
    """Replay a Yuma vector file; print it with each epoch's `expected` replaced by our `outputs`."""
    from rewards.consensus import replay
    from engine.errors import TributaryError

    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON: the user's file
        raise TributaryError(f"{file}: cannot read it as JSON ({e})") from None
    sys.stdout.write(json.dumps(replay(doc), indent=1) + "\n")


def main() -> None:
    """The full CLI (tributary/entry.py sends every command line but plain `epoch run` here)."""
    from tributary.entry import guarded, quiet_logging

    quiet_logging()
    guarded(app)  # standalone: usage errors print click's message and exit 2


if __name__ == "__main__":
    main()
