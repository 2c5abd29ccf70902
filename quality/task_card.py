"""Task cards: everything a contributor needs to know about a task's rules, and nothing the operator keeps hidden.

A card is a JSON object (`card_version` 1) that the operator publishes with `tributary task publish DIR` and a
contributor checks a file against with `tributary validate FILE --task-card DIR/T.json`, on a machine with no home.
Its hard-rule fields (name, features with their types and declared bounds, the label and its allowed values, the row
limits, reject_suspicious and valuation) carry the same names and meanings as in `tasks/T.toml` (quality.task), and
`task_from_card` reads them through the very parser of task files, so a card holds exactly the rules ingest applies
and is checked exactly as strictly.

What is NOT on a card, and why:
- the holdout and its path: valuation measures contributions against it; seen, it could be copied or fitted to.
- the profile (q01, q50, q99, min, max per feature) and the "suspicious" band derived from it: they are order
  statistics of the hidden holdout (min and max are actual holdout values, and the band gives q01 and q99 back), so
  publishing them leaks the holdout. The card says only which columns are profiled, the margin rule in words, and
  whether the task rejects suspicious submissions (`reject_suspicious`): a validation from a card is ingest's
  verdict on the hard rules; where reject_suspicious is true, a file far outside the hidden profile may still fail.
- the challenge labels: for a prediction task the card names the public challenge file (row_id and features only)
  that `task publish` writes beside it.

Pure: no home, no ledger; the engine (engine.actions.task_cards) supplies whether the task is open and its challenge.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from quality.errors import TaskError
from quality.task import PROFILE_MARGIN, Task
from quality.task_toml import _parse_task, task_to_dict

CARD_VERSION = 1
# The keys of a task file a card publishes: the hard rules and valuation. Never holdout, challenge_labels, profile.
TASK_KEYS = ("name", "label", "label_dtype", "label_domain", "min_rows", "max_rows", "reject_suspicious", "features",
             "valuation")
CARD_KEYS = frozenset({"card_version", "open", "epoch", "kinds", "max_payload_bytes", "suspicious", "challenge",
                       *TASK_KEYS})
CHALLENGE_SUFFIX = ".challenge.parquet"


def challenge_file(task_name: str) -> str:
    """The file name `task publish` gives a task's public challenge rows, beside its card."""
    return f"{task_name}{CHALLENGE_SUFFIX}"


def public_challenge(task: Task, challenge: pa.Table) -> pa.Table:
    """The challenge rows as published: row_id and the features, in that order; never a label. TaskError if the
    table lacks one of them."""
    wanted = ["row_id", *task.feature_names()]
    missing = [c for c in wanted if c not in challenge.column_names]
    if missing:
        raise TaskError(f"task {task.name!r}: the challenge rows lack column(s) {', '.join(missing)}", key="challenge")
    return challenge.select(wanted)


def task_card(task: Task, *, open: bool, challenge: pa.Table | None, epoch: int | None = None,
              max_payload_bytes: int | None = None) -> dict:
    """The public card of `task`: its hard rules, valuation, whether it is open (at `epoch`, when given), which kinds
    it takes, the largest payload ingest reads (`max_payload_bytes`, when given) and, for a prediction task, its
    challenge file. No holdout data: see the module docstring."""
    doc = task_to_dict(task)
    card: dict[str, Any] = {"card_version": CARD_VERSION, "name": task.name, "open": bool(open)}
    if epoch is not None:
        card["epoch"] = int(epoch)
    card["kinds"] = ["dataset", "predictions"] if challenge is not None else ["dataset"]
    card.update({k: doc[k] for k in TASK_KEYS if k != "name"})
    if max_payload_bytes is not None:
        card["max_payload_bytes"] = int(max_payload_bytes)
    card["suspicious"] = {
        "reject_suspicious": task.reject_suspicious,
        "profiled_columns": [p.name for p in task.profile],
        "rule": (f"a value more than {PROFILE_MARGIN:g} spans beyond the hidden holdout's 1%..99% quantiles "
                 "(span: that range, at least its magnitude) marks its column suspicious; "
                 + ("such a submission is rejected (quality_failed)" if task.reject_suspicious
                    else "the submission is still accepted, only flagged")),
        "published": False,  # the profile's quantiles are the holdout's own order statistics: never on a card
    }
    if challenge is not None:
        public = public_challenge(task, challenge)
        card["challenge"] = {"file": challenge_file(task.name), "rows": public.num_rows,
                             "columns": public.column_names, "prediction_columns": task.prediction_columns()}
    else:
        card["challenge"] = None
    return card


def task_from_card(card: dict, *, file: str = "task card") -> Task:
    """The Task a card describes, with the same hard rules as the operator's (no holdout, profile or challenge
    paths: enough for quality.gate.check_file). TaskError, naming `file` and the key, for a malformed card."""
    if not isinstance(card, dict):
        raise TaskError(f"{file}: expected a JSON object, got {type(card).__name__}", file=file)
    version = card.get("card_version")
    if version != CARD_VERSION or isinstance(version, bool):
        raise TaskError(f"{file}: key 'card_version': expected {CARD_VERSION}, got {version!r} (a card of another "
                        "version needs the tributary that wrote it)", file=file, key="card_version")
    unknown = sorted(set(card) - CARD_KEYS)
    if unknown:
        raise TaskError(f"{file}: key '{unknown[0]}': unknown key of a version-{CARD_VERSION} card", file=file,
                        key=unknown[0])
    if not isinstance(card.get("open"), bool):
        raise TaskError(f"{file}: key 'open': expected true or false, got {card.get('open')!r}", file=file, key="open")
    mpb = card.get("max_payload_bytes")
    if mpb is not None and (isinstance(mpb, bool) or not isinstance(mpb, int) or mpb < 1):
        raise TaskError(f"{file}: key 'max_payload_bytes': expected a whole number >= 1, got {mpb!r}", file=file,
                        key="max_payload_bytes")
    # The task file's own parser: the same types, ranges and consistency checks as tasks/T.toml.
    return _parse_task(file, {k: card[k] for k in TASK_KEYS if k in card})


def card_to_json(card: dict) -> str:
    """A card as the UTF-8 JSON text `task publish` writes (indented, a final newline; no NaN or infinity)."""
    return json.dumps(card, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def card_from_json(text: str | bytes, *, file: str = "task card") -> tuple[dict, Task]:
    """Parse a card's JSON text and check it: (the card, its Task). TaskError naming `file` if it is not a card."""
    try:
        card = json.loads(text, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as e:
        raise TaskError(f"{file}: not a JSON task card ({e})", file=file) from None
    return card, task_from_card(card, file=file)


def card_max_payload_bytes(card: dict, default: int) -> int:
    """The largest payload ingest reads, as the card states it (`default` when the card does not say)."""
    value = card.get("max_payload_bytes")
    return default if value is None else int(value)
