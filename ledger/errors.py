"""Typed ledger errors, each with a message an operator or analyst can act on."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class for ledger errors."""


class SettlementConflict(LedgerError):
    """An epoch is settled already, from different inputs."""

    def __init__(self, epoch: int, settled_digest: str, new_digest: str):
        self.epoch, self.settled_digest, self.new_digest = epoch, settled_digest, new_digest
        super().__init__(
            f"epoch {epoch} is already settled with inputs digest {settled_digest}; "
            f"these inputs digest to {new_digest}. Settled epochs never change: post a correcting transfer instead."
        )


class EpochOrderError(LedgerError):
    """Epochs settle strictly in order."""


class InsufficientFunds(LedgerError):
    """A transfer would take an account's liquid or staked balance below zero."""


class UnknownAccount(LedgerError):
    """An account name, id or key that the ledger does not know."""


class AmountError(LedgerError, ValueError):
    """An amount the user typed that is not a whole number of base units."""


class LedgerBusy(LedgerError):
    """Another process holds the ledger's write lock."""


class DuplicateRewardLine(LedgerError, ValueError):
    """A settlement's reward lines name one account twice: an account's part of an epoch is one line."""
