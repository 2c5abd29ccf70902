"""`submit` on the contributor's side: nonces from keys/NAME.nonce, the payload streamed and checked as it is copied."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.errors import IngestError
from pipelines.manifest import file_digest, sign_manifest, write_submission
from engine import actions, keys
from engine.errors import TributaryError
from engine.home import existing_home, open_home


@pytest.fixture()
def home(tmp_path):
    h = open_home(tmp_path / "home")
    actions.keygen(h, "alice")
    return h


def test_concurrent_submits_with_one_key_get_distinct_increasing_nonces(home):
    with ThreadPoolExecutor(8) as pool:
        nonces = list(pool.map(lambda _: keys.next_nonce(home.paths.keys, "alice"), range(40)))
    assert sorted(nonces) == list(range(1, 41))
    assert (home.paths.keys / "alice.nonce").read_text() == "40"


def test_submit_streams_a_multi_chunk_payload_and_signs_its_digest(home, tmp_path):
    payload = tmp_path / "big.bin"
    with open(payload, "wb") as f:  # three and a bit 1 MiB chunks
        for i in range(4):
            f.write(bytes([i]) * (1 << 20 if i < 3 else 12345))
    manifest_path, m = actions.submit(home, payload, key="alice", task="digits")
    doc = json.loads(manifest_path.read_text())
    assert doc["digest"] == file_digest(payload) == file_digest(home.paths.drop / "big.bin")
    assert doc["size"] == payload.stat().st_size == (home.paths.drop / "big.bin").stat().st_size
    assert doc["nonce"] == m.nonce == 1


def test_a_payload_changed_after_signing_never_reaches_drop(home, tmp_path):
    payload = tmp_path / "shard.csv"
    payload.write_text("a,label\n1,0\n")
    m = sign_manifest(payload, kind="dataset", task="digits", nonce=1,
                      signing_key=keys.load(home.paths.keys, "alice"), created_at="2026-11-25T12:00:00Z")
    payload.write_text("a,label\n9,0\n")  # same size, other bytes
    with pytest.raises(IngestError, match="changed while it was being submitted"):
        write_submission(home.paths.drop, payload, m)
    assert list(home.paths.drop.iterdir()) == []  # no payload, no manifest, no temporary file left behind


def test_existing_home_creates_nothing(tmp_path):
    with pytest.raises(TributaryError, match="is not a market home"):
        existing_home(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
