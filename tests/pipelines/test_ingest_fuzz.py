"""Property tests for what an adversary can put in drop/ (docs/PROTOCOL.md).

Fast: the parsing and decoding functions on fuzzed input raise only their own typed errors, and a manifest that
parses satisfies every bound of §3. Slow: ~30 generated bad submissions in one drop and one ingest run, each ending
accepted or quarantined with exactly one contributions row.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as pa_feather
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from pipelines.errors import ManifestError
from pipelines.manifest import MANIFEST_SUFFIX, parse_manifest
from quality.errors import SchemaError
from quality.reader import read_table_bytes
from tests.conftest import digits_table
from tests.drop_tools import (
    build_market,
    csv_bytes,
    drop_submission,
    fields_for,
    fresh_key,
    parquet_bytes,
    read_ledger,
    run_ingest,
    sign,
    waiting,
)

FIELDS = ("version", "kind", "task", "payload", "size", "digest", "nonce", "created_at", "public_key", "signature")
MAX_MANIFEST_BYTES = 65_536
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

import nacl.signing  # noqa: E402

_SK = nacl.signing.SigningKey(bytes(range(32)))
_PAYLOAD = parquet_bytes(digits_table(300, 330))
_NAME = "shard.parquet"
BASE = sign(_SK, fields_for(_SK, _PAYLOAD, _NAME, nonce=7))


# ------------------------------------------------------------------------------------------- strategies

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80)
                | st.sampled_from([0, 1, 2, -1, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64, 1.0, 0.0, -0.0, "1", "",
                                   ".", "..", "../x", "/etc/passwd", "a\x00b", "a/b", "a\\b", ".hidden",
                                   "x.manifest.json", "é" * 200, "-", "digits", "weights", "dataset", "predictions",
                                   "0" * 64, "A" * 64, "0" * 128, "g" * 64, "2026-11-25T12:00:00Z", "x" * 65]))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=6)
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
# tokens written into the JSON text as they are: numbers Python's json turns into inf, huge ints, constants
raw_tokens = st.sampled_from(["1e400", "-1e400", "1E2", "1.0", "-0", "NaN", "Infinity", "-Infinity", "1" * 5000,
                              "true", "false", "null", '"\\ud800"', '"\\u0000"', "[]", "{}", "0x10", "01"])


@st.composite
def fuzzed_docs(draw) -> dict:
    """The valid base manifest with some fields replaced, some removed and some added."""
    doc = dict(BASE)
    for f in draw(st.sets(st.sampled_from(FIELDS), max_size=4)):
        doc[f] = draw(json_values | surrogates)
    for f in draw(st.sets(st.sampled_from(FIELDS), max_size=2)):
        doc.pop(f, None)
    for k, v in draw(st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=2)).items():
        doc.setdefault(k, v)
    return doc


@st.composite
def manifest_texts(draw) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=600))
    if choice == 1:
        doc = draw(fuzzed_docs())
        return json.dumps(doc, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2]))).encode(
            "utf-8", "surrogatepass")
    if choice == 2:  # one field's value written as a raw token
        field = draw(st.sampled_from(FIELDS))
        parts = [f'"{k}": {json.dumps(v)}' for k, v in BASE.items() if k != field]
        parts.append(f'"{field}": {draw(raw_tokens)}')
        return ("{" + ", ".join(parts) + "}").encode()
    # the valid text, cut or with a byte changed
    text = bytearray(json.dumps(BASE).encode())
    if draw(st.booleans()):
        return bytes(text[: draw(st.integers(0, len(text)))])
    i = draw(st.integers(0, len(text) - 1))
    text[i] = draw(st.integers(0, 255))
    return bytes(text)


# ------------------------------------------------------------------------------------------- the spec's bounds


def _hex(v, n: int) -> bool:
    return isinstance(v, str) and re.fullmatch(f"[0-9a-f]{{{n}}}", v) is not None


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def spec_violations(doc) -> list[str]:
    """The §3 rules `doc` breaks (created_at's ISO-8601 form and the manifest-name match are not judged here)."""
    if not isinstance(doc, dict):
        return ["<not an object>"]
    bad = [f"missing {f}" for f in FIELDS if f not in doc] + [f"extra {f}" for f in doc if f not in FIELDS]
    g = doc.get
    if "version" in doc and not (_int(g("version")) and g("version") == 1):
        bad.append("version")
    if "kind" in doc and g("kind") not in ("dataset", "predictions", "weights"):
        bad.append("kind")
    if "task" in doc and not (isinstance(g("task"), str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", g("task"))):
        bad.append("task")
    p = g("payload")
    if "payload" in doc:
        try:
            ok = (isinstance(p, str) and 1 <= len(p.encode("utf-8")) <= 255 and not set(p) & {"/", "\\", "\x00"}
                  and p not in (".", "..") and not p.startswith(".") and not p.endswith(MANIFEST_SUFFIX))
        except UnicodeEncodeError:
            ok = False
        if not ok:
            bad.append("payload")
    if "size" in doc and not (_int(g("size")) and 1 <= g("size") <= 2**53 - 1):
        bad.append("size")
    if "digest" in doc and not _hex(g("digest"), 64):
        bad.append("digest")
    if "nonce" in doc and not (_int(g("nonce")) and 0 <= g("nonce") < 2**63):
        bad.append("nonce")
    if "created_at" in doc and not (isinstance(g("created_at"), str) and len(g("created_at")) <= 64):
        bad.append("created_at")
    if "public_key" in doc and not _hex(g("public_key"), 64):
        bad.append("public_key")
    if "signature" in doc and not _hex(g("signature"), 128):
        bad.append("signature")
    return bad


def _parse(data: bytes, file: str = _NAME + MANIFEST_SUFFIX):
    """parse_manifest's result, or None when it raised ManifestError; anything else propagates (a bug)."""
    try:
        return parse_manifest(data, file)
    except ManifestError as e:
        assert str(e), "a ManifestError must say what is wrong"
        return None


def _as_doc(m) -> dict:
    return {f: getattr(m, f) for f in FIELDS}


# ------------------------------------------------------------------------------------------- fast properties


def test_base_manifest_parses() -> None:
    m = _parse(json.dumps(BASE).encode())
    assert m is not None and _as_doc(m) == BASE


@FAST
@given(st.binary(max_size=2000))
def test_parse_manifest_random_bytes_raise_only_manifest_error(data: bytes) -> None:
    m = _parse(data)
    if m is not None:
        assert not spec_violations(_as_doc(m))


@FAST
@given(manifest_texts())
def test_parse_manifest_accepts_only_what_the_spec_allows(data: bytes) -> None:
    m = _parse(data)
    if m is not None:
        assert not spec_violations(_as_doc(m)), f"parsed a manifest the spec forbids: {spec_violations(_as_doc(m))}"
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            assert not spec_violations(doc), f"parsed {spec_violations(doc)} that the spec forbids"


@FAST
@given(fuzzed_docs())
@example({**BASE, "payload": "\ud800"})               # a lone surrogate: not UTF-8
@example({**BASE, "payload": "x\udcff.parquet"})      # how Python spells a non-UTF-8 byte in a listed file name
@example({**BASE, "nonce": 2**63})
@example({**BASE, "size": 0})
@example({**BASE, "size": 2**53})
@example({**BASE, "task": "a" * 65})
@example({**BASE, "created_at": "2026-11-25T12:00:00+00:00" + " " * 60})
def test_parse_manifest_field_by_field(doc: dict) -> None:
    try:
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(doc).encode()
    m = _parse(data)
    # Judge the document as JSON carries it: the escapes "\ud800\udc00" are one character (U+10000), not two.
    violations = spec_violations(json.loads(data))
    if m is not None:
        assert not violations, f"parse_manifest accepted a manifest breaking {violations}: {doc!r}"
    untouched = doc.get("created_at") == BASE["created_at"] and doc.get("payload") == BASE["payload"]
    if not violations and untouched and not (doc["kind"] == "weights" and doc["task"] != "-"):
        assert m is not None, f"parse_manifest refused a manifest the spec allows: {doc!r}"


@pytest.mark.parametrize("pad", [MAX_MANIFEST_BYTES + 1, 3 * MAX_MANIFEST_BYTES])
def test_parse_manifest_refuses_oversized(pad: int) -> None:
    """§3/§4.2: at most 65,536 bytes, even when the JSON (padded with whitespace) is otherwise valid."""
    text = json.dumps(BASE).encode()
    data = text + b" " * (pad - len(text))
    assert len(data) == pad
    assert _parse(data) is None


def test_parse_manifest_field_errors_name_the_field() -> None:
    for field, value in [("nonce", 2**63), ("nonce", -1), ("nonce", "1"), ("size", 3.0), ("size", 0),
                         ("version", True), ("version", 2), ("task", "a" * 65), ("task", "di/gits"),
                         ("payload", "../x.parquet")]:
        with pytest.raises(ManifestError, match=field):
            parse_manifest(json.dumps({**BASE, field: value}).encode(), _NAME + MANIFEST_SUFFIX)


# ---- the payload reader


def _arrow_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pa_feather.write_feather(table, buf)
    return buf.getvalue()


_SMALL = digits_table(300, 312)
VALID_PAYLOADS = {".parquet": parquet_bytes(_SMALL), ".arrow": _arrow_bytes(_SMALL), ".csv": csv_bytes(_SMALL)}
COLUMNS = _SMALL.column_names


@st.composite
def mutated(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i: i + draw(st.integers(1, 64))]
    return bytes(data)


cells = st.one_of(st.sampled_from(["", "1", "1.5", "-0", "nan", "NaN", "inf", "-inf", "1e400", "abc", '"', '""',
                                   "9" * 30, "\t", "é", "\x00", "0x1F", "true", "null", " 3 "]),
                  st.text(max_size=6))


@st.composite
def csv_texts(draw) -> bytes:
    header = draw(st.lists(st.sampled_from(COLUMNS) | st.text(max_size=5), min_size=0, max_size=11))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=12), max_size=6))
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    text = "\n".join(sep.join(r) for r in [header, *rows])
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data += draw(st.binary(max_size=8))
    return data


@st.composite
def payloads(draw) -> tuple[bytes, str]:
    suffix = draw(st.sampled_from([".parquet", ".pq", ".arrow", ".feather", ".ipc", ".csv"]))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        data = draw(st.binary(max_size=1500))
    elif kind == 1:
        data = draw(csv_texts())
    else:
        base = {".pq": ".parquet", ".feather": ".arrow", ".ipc": ".arrow"}.get(suffix, suffix)
        data = draw(mutated(VALID_PAYLOADS[base]))
    return data, "fz" + suffix


@FAST
@given(payloads())
def test_read_table_bytes_raises_only_schema_errors(payload: tuple[bytes, str]) -> None:
    data, name = payload
    try:
        table = read_table_bytes(data, name)
    except SchemaError as e:
        assert name in str(e), f"the error does not name the file: {e}"
        return
    assert isinstance(table, pa.Table)


@pytest.fixture(scope="module")
def digits_task(tmp_path_factory):
    import pyarrow.parquet as pq

    from quality.holdout import task_from_holdout

    path = tmp_path_factory.mktemp("task") / "holdout.parquet"
    pq.write_table(digits_table(0, 300), path)
    return task_from_holdout("digits", path, "label")


@FAST
@given(payloads())
def test_decode_then_cast_raises_only_schema_errors(digits_task, payload: tuple[bytes, str]) -> None:
    from quality.schema import cast_to_task

    data, name = payload
    try:
        cast_to_task(read_table_bytes(data, name), digits_task, file=name)
    except SchemaError:
        pass


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".csv"])
def test_read_table_bytes_reads_valid_payloads(suffix: str) -> None:
    assert read_table_bytes(VALID_PAYLOADS[suffix], "ok" + suffix).num_rows == _SMALL.num_rows


# ---- weight vectors


@FAST
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"epoch": json_values, "weights": json_values}).map(
                     lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"epoch": json_values, "commitment": json_values}).map(
                     lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"epoch": json_values, "weights": json_values, "salt": json_values}).map(
                     lambda v: json.dumps(v).encode())))
def test_parse_weights_raises_only_weights_rejected(data: bytes) -> None:
    from pipelines.weights import WeightRules, WeightsRejected, parse_weights

    try:
        parse_weights(data, "w.json", validator_key="11" * 32, rules=WeightRules(3, commit_reveal=False),
                      accounts={"22" * 32: ("acct-c", "contributor")})
    except WeightsRejected as e:
        assert e.reason and e.detail.startswith("w.json")


# ------------------------------------------------------------------------------------------- one slow batch


MUTATIONS = ["bytes_payload", "csv_payload", "mutated_payload", "fuzzed_fields", "resigned_fields",
             "manifest_bytes", "manifest_text"]


@st.composite
def bad_submissions(draw, i: int):
    """(mutation, payload suffix, payload bytes, manifest fields or bytes, resign?) for submission number i."""
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation in ("bytes_payload", "csv_payload", "mutated_payload"):
        data, name = draw(payloads()) if mutation != "csv_payload" else (draw(csv_texts()), "fz.csv")
        if mutation == "bytes_payload":
            data = draw(st.binary(min_size=1, max_size=1500))
        assume(len(data) >= 1)
        return mutation, Path(name).suffix, data, None
    data = parquet_bytes(digits_table(300 + i, 340 + i))
    if mutation == "manifest_bytes":
        return mutation, ".parquet", data, draw(st.binary(max_size=400))
    if mutation == "manifest_text":
        return mutation, ".parquet", data, draw(manifest_texts())
    changes = {}
    for f in draw(st.sets(st.sampled_from([f for f in FIELDS if f != "signature"]), min_size=1, max_size=3)):
        v = draw(json_values)
        if f == "size" and isinstance(v, int) and not isinstance(v, bool) and v > len(data):
            v = len(data) - 1   # a size above the payload's would make it wait (§2), not leave drop/
        changes[f] = v
    return mutation, ".parquet", data, changes


@pytest.mark.slow
@settings(max_examples=2, phases=[Phase.generate], deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_submissions_in_one_ingest_run(data) -> None:
    root = Path(tempfile.mkdtemp(prefix="tributary-fuzz-"))
    try:
        market = build_market(root)
        home = market.home
        drop = home.paths.drop
        names = []
        for i in range(30):
            mutation, suffix, payload, manifest = data.draw(bad_submissions(i), label=f"submission {i}")
            name = f"fz{i:02d}{suffix}"
            k = fresh_key(home)
            if manifest is None:                     # a correctly signed manifest over a bad payload
                doc = sign(k, fields_for(k, payload, name, nonce=1))
            elif isinstance(manifest, bytes):        # raw manifest bytes
                doc = manifest
            else:                                    # fields changed after signing, or changed and re-signed
                doc = {**sign(k, fields_for(k, payload, name, nonce=1))}
                doc.update(manifest)
                if mutation == "resigned_fields":
                    doc = sign(k, doc)
                doc = json.dumps(doc).encode()
            drop_submission(drop, name, payload, doc)
            names.append(name)

        run_ingest(home)      # must not raise
        led = read_ledger(home)
        for name in names:
            row = led.contribution(name)              # exactly one row each
            assert row["status"] in ("accepted", "quarantined"), row
            if row["status"] == "quarantined":
                assert len(led.quarantine_for(name)) == 1
        assert len(led.contributions) == len(names)
        # every manifest left drop/ (§4: the payload of a manifest that does not verify may stay)
        left = waiting(home) & {name + MANIFEST_SUFFIX for name in names}
        assert not left, f"still in drop/: {sorted(left)}"
        for name in names:
            row = led.contribution(name)
            if row["status"] == "accepted" or row["account_id"] is not None:
                assert name not in waiting(home), f"{name} stayed in drop/ though its manifest verified"
    finally:
        shutil.rmtree(root, ignore_errors=True)
