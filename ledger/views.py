"""Views that answer users' questions in SQL (`tributary sql`), created or replaced by every migrate().

Each view reads the kept tables (balance_totals, rewards, contributions, epochs…), never the whole transfer history
for a balance, and a filter on one epoch or one account is pushed down into the tables it reads.
"""

from __future__ import annotations

import duckdb

VIEWS: dict[str, str] = {
    # What each account holds now: exactly the view migration 6 defines (one row per account, from balance_totals).
    "balances": """
        SELECT a.account_id, COALESCE(b.liquid, 0) AS liquid, COALESCE(b.staked, 0) AS staked,
               COALESCE(b.unbonding, 0) AS unbonding
        FROM accounts a LEFT JOIN balance_totals b USING (account_id)
    """,
    # Who has a say: every account with units staked or unbonding, and its share of all staked units.
    "stakes": """
        SELECT b.account_id, a.name, a.role, b.staked, b.unbonding,
               CASE WHEN SUM(b.staked) OVER () > 0 THEN b.staked / SUM(b.staked) OVER () ELSE 0.0 END
                   AS share_of_stake
        FROM balance_totals b JOIN accounts a USING (account_id)
        WHERE b.staked > 0 OR b.unbonding > 0
    """,
    # Who earned most in each epoch (rank 1 = the largest amount; equal amounts share a rank).
    "leaderboard": """
        SELECT r.epoch, RANK() OVER (PARTITION BY r.epoch ORDER BY r.amount DESC) AS rank,
               r.account_id, a.name, r.role, r.amount, r.value, r.consensus, r.incentive, r.dividends
        FROM rewards r JOIN accounts a USING (account_id)
    """,
    # Why an account earned what it did in an epoch: its submissions there, the value they were given, the house
    # validator's weight on it (contributors), consensus, incentive, dividends, stake (validators) and the amount.
    # An account with submissions but no reward row (all quarantined, say) is here too, with amount 0.
    "explain": """
        WITH subs AS (
            SELECT epoch, account_id, COUNT(*) AS submissions,
                   CAST(COALESCE(SUM(CASE WHEN status = 'accepted' THEN rows - COALESCE(duplicate_rows, 0) END), 0)
                        AS BIGINT) AS accepted_rows,
                   CAST(COALESCE(SUM(COALESCE(duplicate_rows, 0)), 0) AS BIGINT) AS duplicate_rows,
                   COUNT(*) FILTER (WHERE status = 'quarantined') AS quarantined,
                   SUM(value) AS value
            FROM contributions WHERE account_id IS NOT NULL GROUP BY epoch, account_id
        ), keys AS (
            SELECT epoch, account_id FROM rewards
            UNION
            SELECT epoch, account_id FROM subs
        )
        SELECT k.epoch, k.account_id, a.name, COALESCE(r.role, a.role) AS role,
               COALESCE(s.submissions, 0) AS submissions, COALESCE(s.accepted_rows, 0) AS accepted_rows,
               COALESCE(s.duplicate_rows, 0) AS duplicate_rows, COALESCE(s.quarantined, 0) AS quarantined,
               COALESCE(r.value, s.value) AS value,
               CASE WHEN r.role = 'contributor' THEN r.weight END AS house_weight,
               r.consensus, r.incentive, r.dividends, r.stake, COALESCE(r.amount, 0) AS amount
        FROM keys k
        JOIN accounts a ON a.account_id = k.account_id
        LEFT JOIN rewards r ON r.epoch = k.epoch AND r.account_id = k.account_id
        LEFT JOIN subs s ON s.epoch = k.epoch AND s.account_id = k.account_id
    """,
    # Where each epoch's emission went (NULLs for the open epoch); burned: units credited to the burn account.
    "emission_by_epoch": """
        WITH paid AS (
            SELECT epoch,
                   CAST(SUM(amount) FILTER (WHERE role = 'contributor') AS BIGINT) AS to_contributors,
                   CAST(SUM(amount) FILTER (WHERE role = 'validator') AS BIGINT) AS to_validators,
                   CAST(SUM(amount) FILTER (WHERE role = 'owner') AS BIGINT) AS to_owner
            FROM rewards GROUP BY epoch
        ), burned AS (
            SELECT epoch, CAST(SUM(amount) AS BIGINT) AS burned FROM transfers
            WHERE credit_account = 'burn' GROUP BY epoch
        )
        SELECT e.epoch, e.emission,
               CASE WHEN e.settled_at IS NOT NULL THEN COALESCE(p.to_contributors, 0) END AS to_contributors,
               CASE WHEN e.settled_at IS NOT NULL THEN COALESCE(p.to_validators, 0) END AS to_validators,
               CASE WHEN e.settled_at IS NOT NULL THEN COALESCE(p.to_owner, 0) END AS to_owner,
               COALESCE(b.burned, 0) AS burned, e.settled_at
        FROM epochs e
        LEFT JOIN paid p ON p.epoch = e.epoch
        LEFT JOIN burned b ON b.epoch = e.epoch
    """,
    # The governed settings in force in each epoch, and the proposal that set each one (NULL: settings.toml).
    # Settled epochs show what their settlement used; the open epoch shows the last settled values with the
    # proposals passed for it applied (settings.toml edits show once it settles).
    "parameters": """
        WITH open_epoch AS (SELECT max(epoch) AS epoch FROM epochs WHERE settled_at IS NULL),
        carried AS (
            SELECT o.epoch, p.setting, p.value, p.proposal_id
            FROM epoch_parameters p, open_epoch o
            WHERE p.epoch = (SELECT max(epoch) FROM epoch_parameters)
              AND NOT EXISTS (SELECT 1 FROM epoch_parameters x WHERE x.epoch = o.epoch)
        ),
        passed AS (
            SELECT setting, value, proposal_id FROM proposals
            WHERE status = 'passed' AND applies_from = (SELECT epoch FROM open_epoch)
            QUALIFY row_number() OVER (PARTITION BY setting ORDER BY proposal_id DESC) = 1
        )
        SELECT epoch, setting, value, proposal_id FROM epoch_parameters
        UNION ALL
        SELECT c.epoch, c.setting, COALESCE(p.value, c.value), COALESCE(p.proposal_id, c.proposal_id)
        FROM carried c LEFT JOIN passed p USING (setting)
    """,
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """CREATE OR REPLACE every view above (validator_report stays as migration 3 made it)."""
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql.strip()}")
