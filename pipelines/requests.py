"""Signed requests that move a sender's own tokens: stake, unstake, transfer (kind `request`).

A request is a small JSON payload, signed and nonce-checked like any submission:
- `{"action": "stake", "amount_units": N}`: liquid → staked; counts for consensus from the next epoch;
- `{"action": "unstake", "amount_units": N}`: staked → unbonding at once, liquid after the cooldown;
- `{"action": "transfer", "amount_units": N, "to": "<recipient public key>"}`: liquid → the recipient's liquid.
Ingest checks the shape here; whether the balance allows it is decided when it is recorded (ledger/requests.py),
in arrival order, inside the transaction that records it.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa

from pipelines.reasons import SCHEMA_MISMATCH

ACTIONS = ("stake", "unstake", "transfer")
MAX_AMOUNT_UNITS = 2**63 - 1  # amounts are stored as BIGINT
PUBLIC_KEY_HEX_CHARS = 64

REQUEST_SCHEMA = pa.schema([
    ("action", pa.string()),
    ("amount_units", pa.int64()),
    ("to", pa.string()),  # transfer: the recipient's public key
])


class RequestRejected(Exception):
    """A request payload broke a rule; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def request_payload(action: str, amount_units: int, to: str | None = None) -> bytes:
    """The payload `tributary stake|unstake|transfer` signs (checked here first, so the sender hears at once)."""
    doc = {"action": action, "amount_units": amount_units, **({"to": to} if to is not None else {})}
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
    allowed = {"action", "amount_units"} | ({"to"} if action == "transfer" else set())
    extra = sorted(set(doc) - allowed)
    if extra:
        raise bad(f"unexpected field(s) {', '.join(extra)} for action '{action}'")
    amount = doc.get("amount_units")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_AMOUNT_UNITS:
        raise bad(f"field 'amount_units': must be a whole number of base units in [1, {MAX_AMOUNT_UNITS}]")
    to = doc.get("to")
    if action == "transfer" and not (isinstance(to, str) and re.fullmatch(f"[0-9a-f]{{{PUBLIC_KEY_HEX_CHARS}}}", to)):
        raise bad(f"field 'to': must be the recipient's public key, {PUBLIC_KEY_HEX_CHARS} lower-case hex digits")
    return pa.table({"action": [action], "amount_units": [amount], "to": [to]}, schema=REQUEST_SCHEMA)
