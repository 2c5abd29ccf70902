"""Signed requests that move a sender's own tokens: stake, unstake, transfer (kind `request`).

A request is a small JSON payload, signed and nonce-checked like any submission:
- `{"action": "stake", "amount_units": N}`: liquid → staked; counts for consensus from the next epoch;
- `{"action": "unstake", "amount_units": N}`: staked → unbonding at once, liquid after the cooldown;
- `{"action": "transfer", "amount_units": N, "to": "<recipient public key>"}`: liquid → the recipient's liquid;
- `{"action": "auto_stake", "enabled": true|false}`: a contributor's rewards land in its stake from then on (or not);
- `{"action": "propose", "setting": S, "value": "<JSON value>"}`: a change of a governed setting (a staked validator);
- `{"action": "vote", "proposal_id": N, "vote": "yes"|"no"}`: a say on an open proposal, weighed by stake;
- `{"action": "register", "role": R, "name": NAME, "epoch": E, "pow_nonce": N}`: an unknown key registers itself
  (settings `registration = "open"`), with a proof of work over its key and epoch E (protocol/registration.py).
Ingest checks the shape here; whether the balance allows it, and whether a setting is governed and the value in
its range, is decided when it is recorded (ledger/requests.py, ledger/governance.py), in arrival order, inside the
transaction that records it.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa

from protocol.canonical import PUBLIC_KEY_HEX_CHARS
from protocol.reasons import SCHEMA_MISMATCH
from protocol.registration import MAX_POW_NONCE, NAME_PATTERN, SELF_ROLES, valid_name

MONEY_ACTIONS = ("stake", "unstake", "transfer")
ACTIONS = (*MONEY_ACTIONS, "auto_stake", "propose", "vote", "register")
MAX_EPOCH = 2**63 - 1
MAX_AMOUNT_UNITS = 2**63 - 1  # amounts are stored as BIGINT
MAX_PROPOSAL_ID = 2**63 - 1
MAX_SETTING_CHARS = 128
MAX_VALUE_CHARS = 256
VOTES = ("yes", "no")

# The fields each action carries, beside `action` (all required).
FIELDS: dict[str, tuple[str, ...]] = {
    "stake": ("amount_units",), "unstake": ("amount_units",), "transfer": ("amount_units", "to"),
    "auto_stake": ("enabled",), "propose": ("setting", "value"), "vote": ("proposal_id", "vote"),
    "register": ("role", "name", "epoch", "pow_nonce"),
}

REQUEST_SCHEMA = pa.schema([
    ("action", pa.string()),
    ("amount_units", pa.int64()),
    ("to", pa.string()),  # transfer: the recipient's public key
    ("enabled", pa.bool_()),  # auto_stake
    ("setting", pa.string()),  # propose
    ("value", pa.string()),  # propose: the value as JSON text
    ("proposal_id", pa.int64()),  # vote
    ("vote", pa.string()),  # vote: yes | no
    ("role", pa.string()),  # register: contributor | validator
    ("name", pa.string()),  # register: the account's name
    ("pow_epoch", pa.int64()),  # register: the payload's `epoch`, the epoch its proof of work is bound to
    ("pow_nonce", pa.int64()),  # register: the proof of work's nonce
])


class RequestRejected(ValueError):
    """A request payload broke a rule; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def request_payload(action: str, **fields: object) -> bytes:
    """The payload `tributary stake|unstake|transfer|auto-stake|propose|vote` signs (checked here first, so the
    sender hears at once)."""
    doc = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
    data = json.dumps(doc, sort_keys=True).encode()
    parse_request(data, f"{action}.json")
    return data


def parse_request(data: bytes, name: str) -> pa.Table:
    """Check a request payload's shape; return it as one row of REQUEST_SCHEMA."""

    def bad(rule: str) -> RequestRejected:
        return RequestRejected(SCHEMA_MISMATCH, f"{name}: {rule}")

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"not valid UTF-8 JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("action") not in ACTIONS:
        raise bad(f"field 'action': must be one of {', '.join(ACTIONS)}")
    action = doc["action"]
    extra = sorted(set(doc) - {"action", *FIELDS[action]})
    if extra:
        raise bad(f"unexpected field(s) {', '.join(extra)} for action '{action}'")
    missing = [f for f in FIELDS[action] if f not in doc]
    if missing:
        raise bad(f"field '{missing[0]}': required for action '{action}'")
    row: dict[str, object] = {name: None for name in REQUEST_SCHEMA.names}
    row["action"] = action
    if "amount_units" in doc:
        amount = doc["amount_units"]
        if not _whole(amount) or not 0 < amount <= MAX_AMOUNT_UNITS:
            raise bad(f"field 'amount_units': must be a whole number of base units in [1, {MAX_AMOUNT_UNITS}]")
        row["amount_units"] = amount
    if "to" in doc:
        to = doc["to"]
        if not (isinstance(to, str) and re.fullmatch(f"[0-9a-f]{{{PUBLIC_KEY_HEX_CHARS}}}", to)):
            raise bad(f"field 'to': must be the recipient's public key, {PUBLIC_KEY_HEX_CHARS} lower-case hex digits")
        row["to"] = to
    if "enabled" in doc:
        if not isinstance(doc["enabled"], bool):
            raise bad("field 'enabled': must be true or false")
        row["enabled"] = doc["enabled"]
    if "setting" in doc:
        setting, value = doc["setting"], doc["value"]
        if not (isinstance(setting, str) and 0 < len(setting) <= MAX_SETTING_CHARS):
            raise bad(f"field 'setting': must be a setting's name, 1 to {MAX_SETTING_CHARS} characters")
        if not (isinstance(value, str) and 0 < len(value) <= MAX_VALUE_CHARS):
            raise bad(f"field 'value': must be the value as JSON text, 1 to {MAX_VALUE_CHARS} characters")
        row["setting"], row["value"] = setting, value
    if "proposal_id" in doc:
        if not _whole(doc["proposal_id"]) or not 0 < doc["proposal_id"] <= MAX_PROPOSAL_ID:
            raise bad("field 'proposal_id': must be a proposal's id, a whole number from 1")
        if doc["vote"] not in VOTES:
            raise bad("field 'vote': must be yes or no")
        row["proposal_id"], row["vote"] = doc["proposal_id"], doc["vote"]
    if action == "register":
        if doc["role"] not in SELF_ROLES:
            raise bad(f"field 'role': must be one of {', '.join(SELF_ROLES)}")
        if not valid_name(doc["name"]):
            raise bad(f"field 'name': must match {NAME_PATTERN} (1 to 64 of A-Z a-z 0-9 _ . -, not starting with "
                      "'.'), and not 16 or 64 hex digits (the form of an account id or a public key)")
        if not _whole(doc["epoch"]) or not 0 <= doc["epoch"] <= MAX_EPOCH:
            raise bad(f"field 'epoch': must be a whole number in [0, {MAX_EPOCH}], the epoch the proof is bound to")
        if not _whole(doc["pow_nonce"]) or not 0 <= doc["pow_nonce"] <= MAX_POW_NONCE:
            raise bad(f"field 'pow_nonce': must be a whole number in [0, {MAX_POW_NONCE}]")
        row["role"], row["name"], row["pow_epoch"], row["pow_nonce"] = (doc["role"], doc["name"], doc["epoch"],
                                                                        doc["pow_nonce"])
    return pa.Table.from_pylist([row], schema=REQUEST_SCHEMA)


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
