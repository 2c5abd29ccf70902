"""Quarantine reason codes: the one list ingest, the ledger, the docs (docs/PROTOCOL.md §5) and tests share.

Every code a submission or request can be recorded with is here and in ALL_REASONS; tests/protocol/test_protocol_facts.py
checks that PROTOCOL.md's table lists exactly these.
"""

from __future__ import annotations

# Ingest: the manifest, the signature, the key, the payload, the nonce.
UNREADABLE = "unreadable"            # manifest does not parse / a field is missing, extra, mistyped or out of bounds
NOT_REGULAR = "not_regular"          # a symlink, hard link, FIFO, socket, device or directory: never opened or followed
INCOMPLETE = "incomplete"            # still missing or short incomplete_after_seconds after ingest first saw it
BAD_SIGNATURE = "bad_signature"      # the Ed25519 signature does not verify for the manifest's key
UNKNOWN_KEY = "unknown_key"          # the key (or a weighed key) is not registered
UNKNOWN_TASK = "unknown_task"        # the task does not exist
KIND_NOT_ALLOWED = "kind_not_allowed"  # the kind is not allowed for the role (or predictions are not open yet)
TOO_LARGE = "too_large"              # the payload is over max_payload_bytes
DIGEST_MISMATCH = "digest_mismatch"  # the payload's size or BLAKE2b-256 digest is not the manifest's
REPLAYED_NONCE = "replayed_nonce"    # the nonce is not above every earlier-arrived verified nonce of the key
# Decoding and checking the payload.
SCHEMA_MISMATCH = "schema_mismatch"  # a column missing, extra or not castable; a malformed weight vector or request
QUALITY_FAILED = "quality_failed"    # a hard rule of the task's quality suite failed
WRONG_EPOCH = "wrong_epoch"          # a weight vector names another epoch
COMMIT_REQUIRED = "commit_required"  # plain weights while commit-reveal is on
REVEAL_MISMATCH = "reveal_mismatch"  # a reveal does not match its commitment
# Requests the books refuse (ledger/requests.py).
INSUFFICIENT_FUNDS = "insufficient_funds"  # a stake, unstake or transfer request for more than the balance holds
UNKNOWN_RECIPIENT = "unknown_recipient"    # a transfer to a key that is not another registered account
TASK_CLOSED = "task_closed"                # a dataset or predictions for a task governance closed
# The operator (ledger/exclusions.py).
OPERATOR_EXCLUDED = "operator_excluded"    # an accepted submission of an unsettled epoch the operator excluded
# Governance (ledger/governance.py).
NOT_GOVERNED = "not_governed"              # a proposal for a setting that is not on the governed list
OUT_OF_RANGE = "out_of_range"              # a proposal for a value outside its setting's range
NOT_STAKED = "not_staked"                  # a proposal from a key that is not a staked validator; a vote without stake
UNKNOWN_PROPOSAL = "unknown_proposal"      # a vote on a proposal id that does not exist
PROPOSAL_CLOSED = "proposal_closed"        # a vote on a proposal already tallied
# Open registration (ledger/requests.py, a `register` request).
REGISTRATION_CLOSED = "registration_closed"  # a register request while registration is "operator" or carries a fee
BAD_PROOF_OF_WORK = "bad_proof_of_work"      # a register request whose proof is short of the bits or for a stale epoch
ALREADY_REGISTERED = "already_registered"    # a register request from a key (or account id) already registered
NAME_TAKEN = "name_taken"                    # a register request for a name another account holds

ALL_REASONS = (UNREADABLE, NOT_REGULAR, INCOMPLETE, BAD_SIGNATURE, UNKNOWN_KEY, UNKNOWN_TASK, KIND_NOT_ALLOWED,
               TOO_LARGE, DIGEST_MISMATCH, REPLAYED_NONCE, SCHEMA_MISMATCH, QUALITY_FAILED, WRONG_EPOCH,
               COMMIT_REQUIRED, REVEAL_MISMATCH, INSUFFICIENT_FUNDS, UNKNOWN_RECIPIENT, TASK_CLOSED,
               OPERATOR_EXCLUDED, NOT_GOVERNED, OUT_OF_RANGE, NOT_STAKED, UNKNOWN_PROPOSAL, PROPOSAL_CLOSED,
               REGISTRATION_CLOSED, BAD_PROOF_OF_WORK, ALREADY_REGISTERED, NAME_TAKEN)
