"""An operator's way out of a failing blocking check: quarantine one submission of an unsettled epoch, with a reason.

Nothing is deleted: the lake file and the archived files stay; the submission's row says `quarantined` with reason
`operator_excluded`, and a quarantine row carries the operator's text. Settled epochs never change.
"""

from __future__ import annotations

import duckdb

from ledger.epochs import epoch_state
from ledger.errors import LedgerError
from protocol.reasons import OPERATOR_EXCLUDED
MAX_REASON_CHARS = 500


class ExclusionError(LedgerError):
    """A submission that cannot be excluded: unknown, not accepted, or in a settled epoch."""


def exclude(con: duckdb.DuckDBPyConnection, submission_id: str, reason: str) -> int:
    """Quarantine an accepted submission of an epoch not yet settled; returns its epoch. Call inside a transaction."""
    reason = reason.strip()
    if not reason:
        raise ExclusionError("--reason: say why the submission is excluded (it is kept in the quarantine row)")
    if len(reason) > MAX_REASON_CHARS:
        raise ExclusionError(f"--reason: at most {MAX_REASON_CHARS} characters")
    row = con.execute("SELECT epoch, status, account_id, file, received_at, reason FROM contributions "
                      "WHERE submission_id = ?", [submission_id]).fetchone()
    if row is None:
        raise ExclusionError(f"submission {submission_id}: no such submission in the ledger "
                             "(see `tributary sql \"SELECT submission_id, status FROM contributions\"`)")
    epoch, status, account_id, file, received_at, old_reason = row
    if status == "quarantined":
        raise ExclusionError(f"submission {submission_id} is already quarantined ({old_reason})")
    state = epoch_state(con, epoch)
    if state == "settled":
        raise ExclusionError(f"submission {submission_id} belongs to epoch {epoch}, which is settled: settled epochs "
                             "never change")
    con.execute("UPDATE contributions SET status = 'quarantined', reason = ? WHERE submission_id = ?",
                [OPERATOR_EXCLUDED, submission_id])
    con.execute("INSERT INTO quarantine (submission_id, epoch, account_id, file, reason, detail, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [submission_id, epoch, account_id, file or "-", OPERATOR_EXCLUDED, f"excluded by the operator: {reason}",
                 received_at])
    return int(epoch)
