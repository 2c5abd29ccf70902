"""Quarantine reason codes: the one list ingest, the ledger, the docs (docs/PROTOCOL.md §5) and tests share."""

from __future__ import annotations

UNREADABLE = "unreadable"            # manifest does not parse / a field is missing, extra, mistyped or out of bounds
NOT_REGULAR = "not_regular"          # a symlink, FIFO, socket, device or directory: never opened or followed
INCOMPLETE = "incomplete"            # still missing or short incomplete_after_seconds after ingest first saw it
BAD_SIGNATURE = "bad_signature"      # the Ed25519 signature does not verify for the manifest's key
UNKNOWN_KEY = "unknown_key"          # the key (or a weighed key) is not registered
UNKNOWN_TASK = "unknown_task"
KIND_NOT_ALLOWED = "kind_not_allowed"
TOO_LARGE = "too_large"
DIGEST_MISMATCH = "digest_mismatch"
REPLAYED_NONCE = "replayed_nonce"
SCHEMA_MISMATCH = "schema_mismatch"
QUALITY_FAILED = "quality_failed"
WRONG_EPOCH = "wrong_epoch"
COMMIT_REQUIRED = "commit_required"
REVEAL_MISMATCH = "reveal_mismatch"
INSUFFICIENT_FUNDS = "insufficient_funds"  # a stake, unstake or transfer request for more than the balance holds
UNKNOWN_RECIPIENT = "unknown_recipient"    # a transfer to a key the ledger does not know
TASK_CLOSED = "task_closed"                # a dataset or predictions for a task governance closed
NOT_GOVERNED = "not_governed"              # a proposal for a setting that is not on the governed list
OUT_OF_RANGE = "out_of_range"              # a proposal for a value outside its setting's range
NOT_STAKED = "not_staked"                  # a proposal from a key that is not a staked validator; a vote without stake
UNKNOWN_PROPOSAL = "unknown_proposal"      # a vote on a proposal id that does not exist
PROPOSAL_CLOSED = "proposal_closed"        # a vote on a proposal already tallied

ALL_REASONS = (UNREADABLE, NOT_REGULAR, INCOMPLETE, BAD_SIGNATURE, UNKNOWN_KEY, UNKNOWN_TASK, KIND_NOT_ALLOWED,
               TOO_LARGE, DIGEST_MISMATCH, REPLAYED_NONCE, SCHEMA_MISMATCH, QUALITY_FAILED, WRONG_EPOCH,
               COMMIT_REQUIRED, REVEAL_MISMATCH, INSUFFICIENT_FUNDS, UNKNOWN_RECIPIENT, TASK_CLOSED,
               NOT_GOVERNED, OUT_OF_RANGE, NOT_STAKED, UNKNOWN_PROPOSAL, PROPOSAL_CLOSED)
