"""Open registration (issue 22, docs/PROTOCOL.md §6 `register`): with `registration = "open"` an unknown key registers
itself with a signed register request carrying a proof of work bound to its key and a recent epoch; every other
kind from an unknown key stays `unknown_key`, and a key registers once."""

from __future__ import annotations

import json

import nacl.signing
import pytest

from engine import actions, keys
from engine.errors import SettingsError, TributaryError
from engine.settings import Settings
from engine.stages.ingest import ingest
from ledger import accounts
from ledger.db import open_ledger, transaction
from ledger.epochs import current_epoch
from ledger.requests import Registration, Request, apply_requests
from protocol.canonical import WEIGHTS_TASK, canonical_json
from protocol.registration import leading_zero_bits, pow_bits_of, pow_bytes, solve
from protocol.settings_rules import RULES
from tests.drop_tools import drop_submission, honest, parquet_bytes, pub, read_ledger, reopen, signed

BITS = 8


def _epoch(home) -> int:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return current_epoch(con)


def _register_doc(sk: nacl.signing.SigningKey, epoch: int, *, name: str, role: str = "contributor",
                  pow_nonce: int | None = None, bits: int = BITS) -> bytes:
    nonce = solve(pub(sk), epoch, bits) if pow_nonce is None else pow_nonce
    return json.dumps({"action": "register", "role": role, "name": name, "epoch": epoch,
                       "pow_nonce": nonce}).encode()


def _drop_request(home, sk, payload: bytes, file: str, *, nonce: int) -> None:
    drop_submission(home.paths.drop, file, payload,
                    signed(sk, payload, file, nonce=nonce, kind="request", task=WEIGHTS_TASK))


def _open(market, **extra):
    return reopen(market.home, registration="open", registration_pow_bits=BITS, **extra)


def _account(home, public_key: str):
    with open_ledger(home.paths.ledger, read_only=True) as con:
        row = con.execute("SELECT account_id FROM accounts WHERE public_key = ?", [public_key]).fetchone()
        return accounts.get(con, row[0]) if row else None


def _reason(home, file: str) -> tuple[str, str]:
    q = read_ledger(home).quarantined(file)
    return q["reason"], q["detail"]


def test_the_proof_of_work_rule_is_the_documented_bytes() -> None:
    key = "ab" * 32
    assert pow_bytes(key, 3, 17) == ('{"epoch":3,"pow_nonce":17,"public_key":"' + key + '"}').encode()
    assert pow_bytes(key, 3, 17) == canonical_json({"public_key": key, "epoch": 3, "pow_nonce": 17})
    assert leading_zero_bits(bytes([0x00, 0x1F] + [0xFF] * 30)) == 11
    assert leading_zero_bits(bytes(32)) == 256
    n = solve(key, 3, 12)
    assert pow_bits_of(key, 3, n) >= 12 and all(pow_bits_of(key, 3, m) < 12 for m in range(n))


def test_registration_settings_are_checked_at_load(tmp_path) -> None:
    assert Settings().registration == "operator" and Settings().registration_pow_bits == 16
    assert RULES["registration_pow_bits"].governed and not RULES["registration"].governed
    (tmp_path / "settings.toml").write_text('registration = "open"\nregistration_pow_bits = 40\n')
    s = Settings.load(tmp_path)
    assert (s.registration, s.registration_pow_bits) == ("open", 40)
    for bad in ("registration_pow_bits = 41", "registration_pow_bits = -1", 'registration = "anyone"',
                "registration_pow_bits = 8.5"):
        (tmp_path / "settings.toml").write_text(bad + "\n")
        with pytest.raises(SettingsError, match="setting 'registration"):
            Settings.load(tmp_path)


def test_with_operator_registration_a_register_request_is_closed(market) -> None:
    home = market.home
    sk = nacl.signing.SigningKey.generate()
    _drop_request(home, sk, _register_doc(sk, _epoch(home), name="eve"), "reg.json", nonce=1)
    ingest(home)
    reason, detail = _reason(home, "reg.json")
    assert reason == "registration_closed" and "operator" in detail
    assert _account(home, pub(sk)) is None
    actions.keygen(home, "eve")
    with pytest.raises(TributaryError, match="registration = \"operator\""):
        actions.request_register(home, key="eve", role="contributor")


def test_a_self_registration_creates_the_account_then_its_data_counts(market) -> None:
    home = _open(market)
    market.home = home
    actions.keygen(home, "newbie")
    path, epoch, pow_nonce, bits = actions.request_register(home, key="newbie", role="contributor")
    assert bits == BITS and epoch == _epoch(home)
    public = keys.public_hex(keys.load(home.paths.keys, "newbie"))
    assert pow_bits_of(public, epoch, pow_nonce) >= BITS
    # A dataset from the key in the same run arrives while it is still unknown: unknown_key.
    early = market.submit("newbie", honest(300, 340), "early.parquet")
    summary = ingest(home)
    assert summary.accepted == 1, summary
    account = _account(home, public)
    assert account is not None and (account.name, account.role) == ("newbie", "contributor")
    ledger = read_ledger(home)
    row = ledger.contribution(path.name[: -len(".manifest.json")])
    assert row["status"] == "accepted" and row["account_id"] == account.account_id
    assert ledger.quarantined(early.name[: -len(".manifest.json")])["reason"] == "unknown_key"
    later = market.submit("newbie", honest(340, 380), "later.parquet")
    ingest(home)
    row = read_ledger(home).contribution(later.name[: -len(".manifest.json")])
    assert row["status"] == "accepted" and row["account_id"] == account.account_id


def test_bad_proofs_and_second_registrations_are_refused_with_their_reason(market) -> None:
    home = _open(market)
    epoch = _epoch(home)
    weak, thief, future, twice, other = (nacl.signing.SigningKey.generate() for _ in range(5))
    # A nonce short of the bits: the first that fails.
    short = next(n for n in range(10_000) if pow_bits_of(pub(weak), epoch, n) < BITS)
    _drop_request(home, weak, _register_doc(weak, epoch, name="weak", pow_nonce=short), "a-weak.json", nonce=1)
    # A proof found for another key: valid there, short here.
    stolen = next(n for n in range(10**7) if pow_bits_of(pub(other), epoch, n) >= BITS
                  and pow_bits_of(pub(thief), epoch, n) < BITS)
    _drop_request(home, thief, _register_doc(thief, epoch, name="thief", pow_nonce=stolen), "b-thief.json", nonce=1)
    # A proof for an epoch that is not the open one nor the one before.
    _drop_request(home, future, _register_doc(future, epoch + 1, name="future"), "c-future.json", nonce=1)
    # The same key twice: the first registers it, the second is refused.
    _drop_request(home, twice, _register_doc(twice, epoch, name="twice"), "d-twice-1.json", nonce=1)
    ingest(home)  # arrival order across runs is certain: the second comes in the next run
    _drop_request(home, twice, _register_doc(twice, epoch, name="twice2"), "e-twice-2.json", nonce=2)
    # A registered key's other name, and a non-register request from an unknown key.
    _drop_request(home, other, _register_doc(other, epoch, name="alice"), "f-name.json", nonce=1)
    stake = json.dumps({"action": "stake", "amount_units": 5}).encode()
    stranger = nacl.signing.SigningKey.generate()
    _drop_request(home, stranger, stake, "g-stake.json", nonce=1)
    drop_submission(home.paths.drop, "h-data.parquet", parquet_bytes(honest()),
                    signed(stranger, parquet_bytes(honest()), "h-data.parquet", nonce=2))
    ingest(home)
    assert _reason(home, "a-weak.json")[0] == "bad_proof_of_work"
    reason, detail = _reason(home, "b-thief.json")
    assert reason == "bad_proof_of_work" and "leading zero bits" in detail
    reason, detail = _reason(home, "c-future.json")
    assert reason == "bad_proof_of_work" and "field 'epoch'" in detail
    assert read_ledger(home).contribution("d-twice-1.json")["status"] == "accepted"
    assert _reason(home, "e-twice-2.json")[0] == "already_registered"
    assert _account(home, pub(twice)).name == "twice"
    assert _reason(home, "f-name.json")[0] == "name_taken"
    assert _reason(home, "g-stake.json")[0] == "unknown_key"
    assert _reason(home, "h-data.parquet")[0] == "unknown_key"
    for sk in (weak, thief, future, other, stranger):
        assert _account(home, pub(sk)) is None


def test_a_proof_expires_after_the_epoch_before_and_a_fee_closes_self_registration(market) -> None:
    """The ledger's rule, at an epoch later than the fixture's: E and E-1 are accepted, E-2 is not."""
    home = market.home
    sks = [nacl.signing.SigningKey.generate() for _ in range(4)]

    def req(i: int, sk, pow_epoch: int) -> Request:
        return Request(f"s{i}", "", i, f"r{i}.json", "register", public_key=pub(sk), role="contributor",
                       name=f"n{i}", pow_epoch=pow_epoch, pow_nonce=solve(pub(sk), pow_epoch, BITS))

    rules = Registration(open=True, fee_units=0, pow_bits=BITS)
    with open_ledger(home.paths.ledger) as con, transaction(con):
        refused = apply_requests(con, 7, [req(0, sks[0], 7), req(1, sks[1], 6), req(2, sks[2], 5)],
                                 cooldown_epochs=0, registration=rules)
        assert set(refused) == {"s2"} and refused["s2"][0] == "bad_proof_of_work", refused
        fee = Registration(open=True, fee_units=1, pow_bits=BITS)
        refused = apply_requests(con, 7, [req(3, sks[3], 7)], cooldown_epochs=0, registration=fee)
        assert refused["s3"][0] == "registration_closed" and "registration_fee_units" in refused["s3"][1]


def test_the_operator_key_name_is_reserved(market) -> None:
    from engine import actions
    from engine.errors import TributaryError

    with pytest.raises(TributaryError, match="reserved"):
        actions.keygen(market.home, "operator")
    with pytest.raises(TributaryError, match="reserved"):
        actions.register(market.home, "operator", "contributor")
