"""What the CLI commands do, as plain functions: the CLI prints their results, the demo and tests call them."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.money import tokens_to_units
from pipelines.manifest import KINDS, Manifest, sign_manifest, write_submission
from engine import keys
from engine.errors import MissingFileError, TributaryError
from engine.home import Home, utcnow
from protocol.canonical import WEIGHTS_TASK

# `submit` and `keygen` only read keys and write files: DuckDB (ledger) and pyarrow (quality) are imported by the
# functions that use them, so those two commands start fast (tests/tributary/test_cli_imports.py).
if TYPE_CHECKING:
    import pyarrow as pa

    from ledger.accounts import Account
    from quality.task import Task

def keygen(home: Home, name: str) -> str:
    """Make keys/NAME.key and return its public key (hex)."""
    _not_the_operator(name)
    return keys.public_hex(keys.generate(home.paths.keys, name))


def _not_the_operator(name: str) -> None:
    """keys/operator.key signs every settled epoch: no account may be made of it, nor a key file take its name."""
    if name == keys.OPERATOR_KEY:
        raise TributaryError(f"the key name {name!r} is reserved: keys/{name}.key signs each settled epoch "
                             "(tributary operator-key prints its public key); choose another name")


def register(home: Home, name: str, role: str, *, fee_from: str | None = None,
             public_key: str | None = None) -> Account:
    """Register the key NAME under a role, in the open epoch. When `registration_fee_units` (governed) is above 0,
    the fee is burned from the liquid balance of `fee_from` (an existing account: a sponsor, or the operator's
    `owner`), in the same transaction: a key that costs nothing to register costs nothing to multiply.

    The public key is read from keys/NAME.key, or, for a contributor on its own machine whose secret the operator
    never sees, given as `public_key` (64 hex characters, either case; stored lowercase): then no key file is read,
    and if keys/NAME.key exists it must hold that same key."""
    _not_the_operator(name)
    from ledger import accounts
    from ledger.db import open_ledger, transaction
    from ledger.epochs import current_epoch
    from ledger.money import units_to_tokens

    from engine.lock import epoch_lock
    from engine.parameters import settings_at

    if public_key is None:
        public = keys.public_hex(keys.load(home.paths.keys, name))
    else:
        public = keys.parse_public_hex(public_key)
        path = keys.key_path(home.paths.keys, name)  # the same rule for names as keys/NAME.key
        if path.exists() and keys.public_hex(keys.load(home.paths.keys, name)) != public:
            raise TributaryError(f"{path} holds another public key than --public-key {public}; register this key "
                                 "under another NAME")
    with epoch_lock(home, f"register {name}"), open_ledger(home.paths.ledger) as con, transaction(con):
        epoch = current_epoch(con)
        fee = settings_at(home, epoch, con).registration_fee_units
        if fee > 0 and accounts.find(con, public) is None:
            if fee_from is None:
                raise TributaryError(f"registering costs {units_to_tokens(fee)} tokens (registration_fee_units), "
                                     "burned; pass --fee-from ACCOUNT, an account whose liquid balance pays it")
            payer = accounts.get(con, fee_from)
            account = accounts.register(con, public, name, role, epoch)
            accounts.burn_fee(con, payer.account_id, account.account_id, fee, epoch)
            return account
        return accounts.register(con, public, name, role, epoch)


def submit(home: Home, file: Path, *, key: str, task: str | None, kind: str = "dataset") -> tuple[Path, Manifest]:
    """Sign FILE with key NAME and drop it and its manifest into drop/ (atomically, manifest last)."""
    if kind not in KINDS:
        raise TributaryError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind not in ("weights", "request") and not task:
        raise TributaryError("--task is required for datasets and predictions")
    if not file.is_file():
        raise MissingFileError(f"{file}: no such file")
    signing_key = keys.load(home.paths.keys, key)
    manifest = sign_manifest(
        file, kind=kind, task=task or WEIGHTS_TASK, nonce=keys.next_nonce(home.paths.keys, key),
        signing_key=signing_key, created_at=utcnow().isoformat(timespec="microseconds") + "Z",
    )
    return write_submission(home.paths.drop, file, manifest), manifest


def commit(home: Home, weights: dict[str, float], *, key: str) -> tuple[int, str]:
    """Commit to a weight vector for the open epoch: submit its hash now, keep weights and salt to reveal next epoch.

    Returns (epoch, commitment). The weights and salt stay in keys/KEY.reveal-E.json (mode 0600) until revealed.
    """
    import json
    import os
    import secrets

    from ledger.db import open_ledger
    from ledger.epochs import current_epoch
    from pipelines.weights import weights_commitment

    with open_ledger(home.paths.ledger, read_only=True) as con:
        epoch = current_epoch(con)
    salt = secrets.token_hex(16)
    commitment = weights_commitment(epoch, weights, salt)
    secret = keys.key_path(home.paths.keys, key).with_name(f"{key}.reveal-{epoch}.json")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"epoch": epoch, "weights": weights, "salt": salt}, f)
    payload = secret.with_name(f"{key}-commit-{epoch}.json")
    payload.write_text(json.dumps({"epoch": epoch, "commitment": commitment}))
    submit(home, payload, key=key, task=None, kind="weights")
    return epoch, commitment


def reveal(home: Home, *, key: str) -> list[int]:
    """Reveal every commitment of KEY that the open epoch may reveal; returns the commit epochs revealed."""
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch

    with open_ledger(home.paths.ledger, read_only=True) as con:
        epoch = current_epoch(con)
    revealed = []
    for secret in sorted(home.paths.keys.glob(f"{key}.reveal-*.json")):
        commit_epoch = int(secret.stem.rsplit("-", 1)[1])
        if not epoch - home.settings.reveal_epochs <= commit_epoch < epoch:
            continue
        payload = secret.with_name(f"{key}-reveal-{commit_epoch}.json")
        payload.write_text(secret.read_text())
        submit(home, payload, key=key, task=None, kind="weights")
        secret.rename(secret.with_suffix(".revealed"))
        revealed.append(commit_epoch)
    if not revealed:
        raise TributaryError(f"{key} has no commitment that epoch {epoch} may reveal; commit with `tributary commit`")
    return revealed


def request(home: Home, action: str, tokens: str | None = None, *, key: str, to: str | None = None,
            **fields: object) -> tuple[Path, int | None]:
    """Sign and drop a request of KEY's (stake, unstake, transfer of its own tokens; auto_stake; propose; vote);
    ingest applies it when it lands.

    `to` (transfer) is an account name, id or public key; it is resolved to a public key now, from the ledger
    (read-only). `fields` are the action's other fields (enabled; setting, value; proposal_id, vote).
    Returns (dropped manifest, units or None)."""
    units = tokens_to_units(tokens) if tokens is not None else None
    recipient = None
    if action == "transfer":
        from ledger import accounts
        from ledger.db import open_ledger

        with open_ledger(home.paths.ledger, read_only=True) as con:
            account = accounts.get(con, to or "")
        if account.public_key is None:
            raise TributaryError(f"{to!r} is a system account; tokens can only be sent to a registered key")
        recipient = account.public_key
    path = _drop_request(home, key, action, amount_units=units, to=recipient, **fields)
    return path, units


def _drop_request(home: Home, key: str, action: str, **fields) -> Path:
    """Build a request payload (refused now, as ingest would refuse it, when a field breaks its rule), sign it with
    KEY and drop it; returns the dropped manifest's path."""
    import tempfile

    from pipelines.requests import request_payload

    try:
        data = request_payload(action, **fields)
    except ValueError as e:  # RequestRejected: the same rule ingest would apply, said now
        raise TributaryError(str(e)) from None
    with tempfile.TemporaryDirectory() as tmp:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        payload = Path(tmp) / f"{key}-{action}-{stamp}.json"
        payload.write_bytes(data)
        path, _ = submit(home, payload, key=key, task=None, kind="request")
    return path


def request_register(home: Home, *, key: str, role: str, name: str | None = None,
                     epoch: int | None = None) -> tuple[Path, int, int, int]:
    """Sign and drop KEY's own `register` request (open registration, docs/PROTOCOL.md §6): role, account name
    (default: KEY) and a proof of work over KEY's public key and `epoch` (default: the open epoch), of the
    `registration_pow_bits` in force. Refused at once when the home's registration is not open or carries a fee.
    Returns (dropped manifest, epoch, pow_nonce, bits)."""
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch
    from protocol.registration import solve

    from engine.parameters import settings_at

    public = keys.public_hex(keys.load(home.paths.keys, key))
    with open_ledger(home.paths.ledger, read_only=True) as con:
        open_epoch = current_epoch(con)
        rules = settings_at(home, open_epoch, con)
    if home.settings.registration != "open":
        raise TributaryError("this market registers keys by its operator (setting registration = \"operator\"): "
                             "send the operator your public key instead (docs/PROTOCOL.md §1)")
    if rules.registration_fee_units > 0:
        raise TributaryError(f"registration costs {rules.registration_fee_units} base units (registration_fee_units) "
                             "that a self-registration cannot pay: ask the operator to register the key")
    epoch = open_epoch if epoch is None else epoch
    bits = rules.registration_pow_bits
    pow_nonce = solve(public, epoch, bits)
    path = _drop_request(home, key, "register", role=role, name=name or key, epoch=epoch, pow_nonce=pow_nonce)
    return path, epoch, pow_nonce, bits


def stake(home: Home, name: str, tokens: str, *, unstake: bool = False) -> tuple[int, int]:
    """Operator setup only (the demo, the simulator, tests): stake tokens of account NAME directly in the ledger.
    Users stake with a signed request (`request`, `tributary stake NAME AMOUNT --key KEY`). Returns (epoch, staked)."""
    from ledger import accounts, transfers
    from ledger.db import open_ledger, transaction
    from ledger.epochs import current_epoch

    from engine.lock import epoch_lock

    units = tokens_to_units(tokens)
    with epoch_lock(home, f"stake {name}"), open_ledger(home.paths.ledger) as con, transaction(con):
        account = accounts.get(con, name)
        epoch = current_epoch(con)
        (transfers.unstake if unstake else transfers.stake)(con, account.account_id, units, epoch)
        return epoch, transfers.balance(con, account.account_id, "staked")


def grant(home: Home, name: str, tokens: str) -> int:
    """Mint tokens from the emission account into NAME's liquid balance; returns the units granted."""
    from ledger import accounts, transfers
    from ledger.db import open_ledger, transaction
    from ledger.epochs import current_epoch

    from engine.lock import epoch_lock

    units = tokens_to_units(tokens)
    with epoch_lock(home, f"grant {name}"), open_ledger(home.paths.ledger) as con, transaction(con):
        account = accounts.get(con, name)
        transfers.grant(con, account.account_id, units, current_epoch(con), f"grant to {name}")
    return units


def task_init(home: Home, name: str, holdout: Path, label: str, *, extra_labels: Sequence = (),
              bounds: Mapping[str, tuple[float, float]] | None = None, challenge: Path | None = None,
              scaling: str = "standard") -> Task:
    """Copy the holdout into the home (hidden from contributors) and write tasks/NAME.toml from it.

    The holdout proves only the columns, types, labels seen and a profile (which flags, never rejects); the
    operator adds labels it lacks (`extra_labels`) and declares hard bounds per feature (`bounds`, "*" for all).

    With `challenge` (labelled rows like the holdout's), the task opens predictions: the rows get ids 0..n-1, their
    features are published in challenges/NAME.parquet and their labels kept hidden beside the holdout.
    """
    from dataclasses import replace

    from quality.holdout import task_from_holdout
    from quality.task_toml import write_task
    from rewards.scaling import SCALINGS

    if scaling not in SCALINGS:
        raise TributaryError(f"--scaling: expected one of {', '.join(SCALINGS)}, got {scaling!r}")

    target = home.paths.holdout / f"{name}.parquet"
    if not holdout.is_file():
        raise MissingFileError(f"{holdout}: no such holdout file")
    copied = holdout.resolve() != target.resolve()
    if copied:
        shutil.copyfile(holdout, target)
    try:
        task = task_from_holdout(name, target, label, extra_labels=extra_labels, bounds=dict(bounds or {}),
                                 holdout_ref=str(target.relative_to(home.root)))
    except BaseException:
        if copied:
            target.unlink(missing_ok=True)  # a refused holdout leaves no copy behind
        raise
    task = replace(task, scaling=scaling, k=home.settings.knn_k)  # knn_k: the k a new task starts from
    if challenge is not None:
        task = _publish_challenge(home, task, challenge)
    write_task(task, home.paths.tasks / f"{name}.toml")
    return task


def _publish_challenge(home: Home, task: Task, challenge: Path) -> Task:
    """Split labelled challenge rows into public features and hidden labels, keyed by row_id."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    from quality.reader import read_table
    from quality.schema import cast_to_task

    table = cast_to_task(read_table(challenge), task, file=str(challenge))
    ids = pa.array(range(table.num_rows), pa.int64())
    public = home.paths.challenges / f"{task.name}.parquet"
    hidden = home.paths.holdout / f"{task.name}-challenge.parquet"
    pq.write_table(table.select(task.feature_names()).add_column(0, "row_id", ids), public)
    pq.write_table(pa.table({"row_id": ids, task.label: table.column(task.label)}), hidden)
    return dataclasses.replace(task, challenge=str(public.relative_to(home.root)),
                               challenge_labels=str(hidden.relative_to(home.root)))


def task_cards(home: Home) -> dict[str, tuple[dict, pa.Table | None]]:
    """Every task's public card (quality.task_card) as the market stands now: open or closed by governance at the
    open epoch (engine.parameters.closed_tasks, as ingest decides), the home's max_payload_bytes, and for a
    prediction task its public challenge rows (row_id and features). Name -> (card, challenge table or None).
    Reads the ledger read-only; writes nothing."""
    import pyarrow.parquet as pq

    from ledger.db import open_ledger
    from ledger.epochs import current_epoch
    from quality.task_card import public_challenge, task_card
    from quality.task_toml import load_tasks

    from engine.parameters import closed_tasks

    tasks = load_tasks(home.paths.tasks)
    with open_ledger(home.paths.ledger, read_only=True) as con:
        epoch = current_epoch(con)
        closed = closed_tasks(home, epoch, list(tasks), con)
    out: dict[str, tuple[dict, pa.Table | None]] = {}
    for name, task in sorted(tasks.items()):
        challenge = public_challenge(task, pq.read_table(home.path_of(task.challenge))) if task.challenge else None
        out[name] = (task_card(task, open=name not in closed, challenge=challenge, epoch=epoch,
                               max_payload_bytes=home.settings.max_payload_bytes), challenge)
    return out


def task_card_of(home: Home, name: str) -> dict:
    """One task's public card; TributaryError naming the known tasks if there is no such task."""
    cards = task_cards(home)
    if name not in cards:
        raise TributaryError(f"no task {name!r} (known: {', '.join(cards) or 'none'})")
    return cards[name][0]


def publish_task_cards(home: Home, out_dir: Path) -> list[Path]:
    """Write DIR/T.json for every task and DIR/T.challenge.parquet for a prediction task, each atomically
    (protocol.files.write_atomic: a reader never sees half a file). Returns the paths written."""
    import pyarrow.parquet as pq

    from protocol.files import write_atomic
    from quality.task_card import card_to_json, challenge_file

    written = []
    for name, (card, challenge) in task_cards(home).items():
        if challenge is not None:
            path = Path(out_dir) / challenge_file(name)
            write_atomic(path, lambda f, t=challenge: pq.write_table(t, f))
            written.append(path)
        path = Path(out_dir) / f"{name}.json"
        write_atomic(path, lambda f, c=card: f.write(card_to_json(c).encode("utf-8")))
        written.append(path)
    return written
