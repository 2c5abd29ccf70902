"""Views that answer users' questions in SQL (`tributary sql`), created by migrate() when missing or changed.

Each view reads the kept tables (balance_totals, rewards, contributions, epochs…), never the whole transfer history
for a balance, and a filter on one epoch or one account is pushed down into the tables it reads.

| view | one row per | answers |
| --- | --- | --- |
| `balances` | account | what do I hold now? |
| `stakes` | account with stake or unbonding | who has a say, and what share of all stake? |
| `leaderboard` | epoch x rewarded account | who earned most in epoch E? |
| `explain` | epoch x account | why did X earn Y: submissions, accepted data rows (datasets, predictions), duplicate, judged and unoriginal rows, submissions zeroed as unoriginal, quarantined, value and what the originality rules took, house weight, consensus, incentive or dividends, stake, amount |
| `originality` | dataset submission with originality figures | was it paid for information? rows judged (could earn), unoriginal (earn 0), below the gate's level; the gate's p-value (below GATE_P = 1e-6: zeroed as a whole, status 'unoriginal'), the median p-value, value with and without the originality rules |
| `epoch_value` | epoch x task | what did the epoch's rows add? the table `epoch_values` (lake rows, new rows, rows admitted to the game, holdout rows, U'(lake), gain = U'(lake + rows that played) - U'(lake)) with the utility after, and the epoch's submissions, duplicate and unoriginal rows, value paid for (adds up to gain) and originality cost |
| `emission_by_epoch` | epoch | where did the emission go, what was burned? |
| `parameters` | epoch x governed setting | which value was in force, and which proposal set it? |

Epochs settled before the originality rules (results versions 1-3) have no originality figures (NULL) and no
`epoch_values` rows.
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
    # Originality: its rows judged (could earn) and unoriginal (earned 0), its submissions zeroed as unoriginal by the
    # gate, and what the originality rules took (value without them less value; NULL where not measured).
    # An account with submissions but no reward row (all quarantined, say) is here too, with amount 0.
    # accepted_rows counts data rows only (accepted datasets and predictions, less duplicates): a request or a weight
    # vector is a submission, not rows of data.
    "explain": """
        WITH subs AS (
            SELECT epoch, account_id, COUNT(*) AS submissions,
                   CAST(COALESCE(SUM(CASE WHEN status = 'accepted' AND kind IN ('dataset', 'predictions')
                                          THEN rows - COALESCE(duplicate_rows, 0) END), 0)
                        AS BIGINT) AS accepted_rows,
                   CAST(COALESCE(SUM(COALESCE(duplicate_rows, 0)), 0) AS BIGINT) AS duplicate_rows,
                   CAST(COALESCE(SUM(judged_rows), 0) AS BIGINT) AS judged_rows,
                   CAST(COALESCE(SUM(unoriginal_rows), 0) AS BIGINT) AS unoriginal_rows,
                   COUNT(*) FILTER (WHERE status = 'unoriginal') AS unoriginal_submissions,
                   COUNT(*) FILTER (WHERE status = 'quarantined') AS quarantined,
                   SUM(value) AS value,
                   SUM(value_without_originality - value) AS originality_cost
            FROM contributions WHERE account_id IS NOT NULL GROUP BY epoch, account_id
        ), keys AS (
            SELECT epoch, account_id FROM rewards
            UNION
            SELECT epoch, account_id FROM subs
        )
        SELECT k.epoch, k.account_id, a.name, COALESCE(r.role, a.role) AS role,
               COALESCE(s.submissions, 0) AS submissions, COALESCE(s.accepted_rows, 0) AS accepted_rows,
               COALESCE(s.duplicate_rows, 0) AS duplicate_rows, COALESCE(s.judged_rows, 0) AS judged_rows,
               COALESCE(s.unoriginal_rows, 0) AS unoriginal_rows,
               COALESCE(s.unoriginal_submissions, 0) AS unoriginal_submissions,
               COALESCE(s.quarantined, 0) AS quarantined,
               COALESCE(r.value, s.value) AS value, s.originality_cost,
               CASE WHEN r.role = 'contributor' THEN r.weight END AS house_weight,
               r.consensus, r.incentive, r.dividends, r.stake, COALESCE(r.amount, 0) AS amount
        FROM keys k
        JOIN accounts a ON a.account_id = k.account_id
        LEFT JOIN rewards r ON r.epoch = k.epoch AND r.account_id = k.account_id
        LEFT JOIN subs s ON s.epoch = k.epoch AND s.account_id = k.account_id
    """,
    # Each dataset submission's originality figures (settled epochs from the originality rules on): was it paid for
    # information? originality_p is the gate's p-value (below GATE_P the whole submission earns 0: 'unoriginal').
    "originality": """
        SELECT c.epoch, c.submission_id, a.name, c.task, c.rows, c.judged_rows, c.unoriginal_rows, c.gate_rows,
               c.originality_p, c.median_p, c.status, c.value, c.value_without_originality,
               c.value_without_originality - c.value AS originality_cost, c.account_id
        FROM contributions c LEFT JOIN accounts a USING (account_id)
        WHERE c.kind = 'dataset' AND c.judged_rows IS NOT NULL
    """,
    # What each epoch's rows added to each task's lake (the epoch_values table), with the utility after and what the
    # epoch's submissions of the task were paid for: value adds up to gain (each row's exact Shapley value).
    "epoch_value": """
        WITH subs AS (
            SELECT epoch, task, COUNT(*) AS submissions,
                   CAST(COALESCE(SUM(duplicate_rows), 0) AS BIGINT) AS duplicate_rows,
                   CAST(COALESCE(SUM(unoriginal_rows), 0) AS BIGINT) AS unoriginal_rows,
                   COUNT(*) FILTER (WHERE status = 'unoriginal') AS unoriginal_submissions,
                   SUM(value) AS value,
                   SUM(value_without_originality - value) AS originality_cost
            FROM contributions WHERE kind = 'dataset' AND status <> 'quarantined' GROUP BY epoch, task
        )
        SELECT v.epoch, v.task, v.lake_rows, v.new_rows, v.admitted_rows, v.test_rows, v.lake_utility, v.gain,
               v.lake_utility + v.gain AS utility_after, COALESCE(s.submissions, 0) AS submissions,
               COALESCE(s.duplicate_rows, 0) AS duplicate_rows, COALESCE(s.unoriginal_rows, 0) AS unoriginal_rows,
               COALESCE(s.unoriginal_submissions, 0) AS unoriginal_submissions, COALESCE(s.value, 0.0) AS value,
               s.originality_cost
        FROM epoch_values v LEFT JOIN subs s ON s.epoch = v.epoch AND s.task = v.task
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


VIEW_COMMENT_PREFIX = "tributary view "  # + the digest of the SQL it was made from: COMMENT ON VIEW, see below


def view_comment(name: str, sql: str) -> str:
    """The comment a view made from `sql` carries: names the digest of its name, its SQL and the DuckDB version that
    bound it, so an unchanged view is recognised (and left alone) on the next open, and a new DuckDB remakes them."""
    import hashlib

    text = f"{name}\n{sql.strip()}\nduckdb {duckdb.__version__}"
    return VIEW_COMMENT_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:32]


def create_views(con: duckdb.DuckDBPyConnection, *, force: bool = False) -> None:
    """CREATE OR REPLACE each view above that is missing or whose SQL changed (validator_report stays as migration 3
    made it); with `force`, every one (after a migration, which may have rebuilt the tables they read).

    Each view is stamped with a comment naming the digest of its SQL (view_comment): a view made by an older
    version (no comment, or another digest) is replaced; one that matches is not touched, so opening the ledger
    for writing changes nothing in the file when nothing changed."""
    present = {} if force else dict(con.execute(
        "SELECT view_name, comment FROM duckdb_views() "
        "WHERE NOT internal AND database_name = current_database() AND schema_name = 'main'").fetchall())
    for name, sql in VIEWS.items():
        comment = view_comment(name, sql)
        if present.get(name) == comment:
            continue
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql.strip()}")
        con.execute(f"COMMENT ON VIEW {name} IS '{comment}'")  # hex digits only: nothing to quote
