"""The ledger's tables and views (DESIGN 4.6), applied as numbered migrations."""

from __future__ import annotations

import duckdb

from ledger.views import create_views

EMISSION_ACCOUNT = "emission"  # the only account allowed a negative balance: every token ever minted comes from it
OWNER_ACCOUNT = "owner"  # the market operator's cut
BURN_ACCOUNT = "burn"  # where burned tokens go (registration fees): credited, never debited
SYSTEM_ACCOUNTS = (EMISSION_ACCOUNT, OWNER_ACCOUNT, BURN_ACCOUNT)
# liquid: spendable; staked: a say in consensus and governance; unbonding: unstaked, liquid after the cooldown
BUCKETS = ("liquid", "staked", "unbonding")
EPOCH_STATES = ("open", "ingesting", "scored", "settled")  # an epoch only ever moves forward through these

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE accounts (
        account_id VARCHAR PRIMARY KEY,
        public_key VARCHAR UNIQUE,
        name VARCHAR NOT NULL,
        role VARCHAR NOT NULL CHECK (role IN ('contributor', 'validator', 'system', 'owner')),
        registered_epoch BIGINT NOT NULL
    );
    CREATE TABLE epochs (
        epoch BIGINT PRIMARY KEY,
        starts_at TIMESTAMP NOT NULL,
        ends_at TIMESTAMP,
        settled_at TIMESTAMP,
        inputs_digest VARCHAR,
        results_digest VARCHAR,
        prev_hash VARCHAR,
        hash VARCHAR,
        emission BIGINT
    );
    CREATE TABLE contributions (
        submission_id VARCHAR PRIMARY KEY,
        epoch BIGINT NOT NULL,
        account_id VARCHAR,
        task VARCHAR,
        kind VARCHAR,
        rows BIGINT,
        status VARCHAR NOT NULL CHECK (status IN ('accepted', 'duplicate', 'quarantined')),
        reason VARCHAR,
        digest VARCHAR,
        public_key VARCHAR,
        nonce BIGINT,
        file VARCHAR,
        received_at TIMESTAMP,
        lake_path VARCHAR,
        duplicate_rows BIGINT,
        value DOUBLE
    );
    CREATE TABLE quarantine (
        submission_id VARCHAR PRIMARY KEY,
        epoch BIGINT NOT NULL,
        account_id VARCHAR,
        file VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        detail VARCHAR NOT NULL,
        received_at TIMESTAMP
    );
    CREATE TABLE rewards (
        epoch BIGINT NOT NULL,
        account_id VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        value DOUBLE,
        weight DOUBLE,
        consensus DOUBLE,
        incentive DOUBLE,
        dividends DOUBLE,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        stake BIGINT,
        validator_trust DOUBLE,
        PRIMARY KEY (epoch, account_id)
    );
    CREATE TABLE transfers (
        id BIGINT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        debit_account VARCHAR NOT NULL,
        debit_bucket VARCHAR NOT NULL CHECK (debit_bucket IN ('liquid', 'staked')),
        credit_account VARCHAR NOT NULL,
        credit_bucket VARCHAR NOT NULL CHECK (credit_bucket IN ('liquid', 'staked')),
        amount BIGINT NOT NULL CHECK (amount > 0),
        kind VARCHAR NOT NULL,
        memo VARCHAR NOT NULL DEFAULT ''
    );
    CREATE TABLE bonds (
        epoch BIGINT NOT NULL,
        validator VARCHAR NOT NULL,
        miner VARCHAR NOT NULL,
        bond DOUBLE NOT NULL,
        PRIMARY KEY (epoch, validator, miner)
    );
    CREATE TABLE weights (
        epoch BIGINT NOT NULL,
        validator VARCHAR NOT NULL,
        miner VARCHAR NOT NULL,
        weight DOUBLE NOT NULL,
        PRIMARY KEY (epoch, validator, miner)
    );
    -- Balance = credits - debits per account and bucket; derived, never stored.
    CREATE VIEW balances AS
    WITH moves AS (
        SELECT credit_account AS account_id, credit_bucket AS bucket, amount FROM transfers
        UNION ALL
        SELECT debit_account, debit_bucket, -amount FROM transfers
    )
    SELECT a.account_id,
           CAST(COALESCE(SUM(m.amount) FILTER (WHERE m.bucket = 'liquid'), 0) AS BIGINT) AS liquid,
           CAST(COALESCE(SUM(m.amount) FILTER (WHERE m.bucket = 'staked'), 0) AS BIGINT) AS staked
    FROM accounts a LEFT JOIN moves m USING (account_id)
    GROUP BY a.account_id;
    """,
    # 2: model contributions (predictions on a task's challenge) get their own score column.
    "ALTER TABLE rewards ADD COLUMN model_score DOUBLE;",
    # 3: commit-reveal of validator weights, and the weight-copy report per validator and epoch.
    """
    CREATE TABLE commitments (
        epoch BIGINT NOT NULL,
        validator VARCHAR NOT NULL,
        commitment VARCHAR NOT NULL,
        submission_id VARCHAR PRIMARY KEY
    );
    CREATE TABLE validator_reports (
        epoch BIGINT NOT NULL,
        validator VARCHAR NOT NULL,
        similarity_to_consensus DOUBLE,
        similarity_to_own_history DOUBLE,
        PRIMARY KEY (epoch, validator)
    );
    -- A copier's weights track the last public consensus more closely than its own history.
    CREATE VIEW validator_report AS
    SELECT v.epoch, v.validator, a.name, v.similarity_to_consensus, v.similarity_to_own_history,
           v.similarity_to_consensus - v.similarity_to_own_history AS copy_signal,  -- NULL without a history
           r.validator_trust, r.dividends, r.stake, r.amount,
           CASE WHEN r.stake > 0 THEN r.amount / r.stake END AS earned_per_staked_unit
    FROM validator_reports v
    JOIN accounts a ON a.account_id = v.validator
    LEFT JOIN rewards r ON r.epoch = v.epoch AND r.account_id = v.validator;
    """,
    # 4: drop/ is a trust boundary. Ingest stamps every name it sees with its own arrival number (file times are the
    # sender's to choose), records each decision before moving a file, and keeps whether a signature verified.
    """
    CREATE SEQUENCE arrival_seq START 1;
    CREATE TABLE arrivals (
        arrival BIGINT PRIMARY KEY,
        name VARCHAR NOT NULL,
        identity VARCHAR NOT NULL,
        first_seen_at TIMESTAMP NOT NULL,
        epoch BIGINT NOT NULL,
        submission_id VARCHAR,
        destination VARCHAR CHECK (destination IN ('archive', 'quarantine')),
        decided_epoch BIGINT,
        left_at TIMESTAMP
    );
    ALTER TABLE contributions ADD COLUMN arrival BIGINT;
    ALTER TABLE contributions ADD COLUMN verified BOOLEAN;
    ALTER TABLE contributions ADD COLUMN suspicious VARCHAR;
    ALTER TABLE quarantine ADD COLUMN arrival BIGINT;
    """,
    # 5: a duplicate names what it copies: the earlier submissions (any key's, the sender's own included).
    "ALTER TABLE contributions ADD COLUMN duplicate_of VARCHAR[];",
    # 6: one writer per epoch (its state), staking with a cooldown, signed requests, governance by stake, and balances
    # kept as a table (one row per account) so a balance read does not grow with history.
    """
    CREATE TABLE market (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
    ALTER TABLE epochs ADD COLUMN state VARCHAR;
    UPDATE epochs SET state = CASE WHEN settled_at IS NULL THEN 'open' ELSE 'settled' END;
    ALTER TABLE epochs ADD COLUMN inputs_version INTEGER;
    ALTER TABLE accounts ADD COLUMN fee_units BIGINT DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN auto_stake BOOLEAN DEFAULT false;
    INSERT INTO accounts (account_id, public_key, name, role, registered_epoch, fee_units, auto_stake)
        VALUES ('burn', NULL, 'burn', 'system', 0, 0, false) ON CONFLICT DO NOTHING;
    DROP VIEW balances;
    CREATE TABLE transfers_v6 (
        id BIGINT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        debit_account VARCHAR NOT NULL,
        debit_bucket VARCHAR NOT NULL CHECK (debit_bucket IN ('liquid', 'staked', 'unbonding')),
        credit_account VARCHAR NOT NULL,
        credit_bucket VARCHAR NOT NULL CHECK (credit_bucket IN ('liquid', 'staked', 'unbonding')),
        amount BIGINT NOT NULL CHECK (amount > 0),
        kind VARCHAR NOT NULL,
        memo VARCHAR NOT NULL DEFAULT ''
    );
    INSERT INTO transfers_v6 SELECT * FROM transfers;
    DROP TABLE transfers;
    ALTER TABLE transfers_v6 RENAME TO transfers;
    CREATE TABLE balance_totals (
        account_id VARCHAR PRIMARY KEY,
        liquid BIGINT NOT NULL DEFAULT 0,
        staked BIGINT NOT NULL DEFAULT 0,
        unbonding BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO balance_totals
    WITH moves AS (
        SELECT credit_account AS account_id, credit_bucket AS bucket, amount FROM transfers
        UNION ALL
        SELECT debit_account, debit_bucket, -amount FROM transfers
    )
    SELECT account_id,
           CAST(COALESCE(SUM(amount) FILTER (WHERE bucket = 'liquid'), 0) AS BIGINT),
           CAST(COALESCE(SUM(amount) FILTER (WHERE bucket = 'staked'), 0) AS BIGINT),
           CAST(COALESCE(SUM(amount) FILTER (WHERE bucket = 'unbonding'), 0) AS BIGINT)
    FROM moves GROUP BY account_id;
    CREATE VIEW balances AS
    SELECT a.account_id, COALESCE(b.liquid, 0) AS liquid, COALESCE(b.staked, 0) AS staked,
           COALESCE(b.unbonding, 0) AS unbonding
    FROM accounts a LEFT JOIN balance_totals b USING (account_id);
    CREATE TABLE requests (
        submission_id VARCHAR PRIMARY KEY,
        epoch BIGINT NOT NULL,
        account_id VARCHAR NOT NULL,
        action VARCHAR NOT NULL CHECK (action IN ('stake', 'unstake', 'transfer', 'auto_stake', 'propose', 'vote')),
        amount BIGINT,
        counterparty VARCHAR,
        setting VARCHAR,
        value VARCHAR,
        proposal_id BIGINT,
        vote VARCHAR,
        release_epoch BIGINT,
        arrival BIGINT
    );
    CREATE TABLE proposals (
        proposal_id BIGINT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        setting VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        proposer VARCHAR NOT NULL,
        submission_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ('open', 'passed', 'rejected')),
        yes_stake BIGINT,
        no_stake BIGINT,
        active_stake BIGINT,
        applies_from BIGINT
    );
    CREATE TABLE votes (
        submission_id VARCHAR PRIMARY KEY,
        proposal_id BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        voter VARCHAR NOT NULL,
        vote VARCHAR NOT NULL CHECK (vote IN ('yes', 'no')),
        arrival BIGINT
    );
    CREATE TABLE epoch_parameters (
        epoch BIGINT NOT NULL,
        setting VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        proposal_id BIGINT,
        PRIMARY KEY (epoch, setting)
    );
    """,
    # 7: each settled epoch keeps the inputs document its inputs_digest hashes, so audit can recompute the digest
    # and check the document against the tables it produced (inputs_version 1).
    """
    CREATE TABLE epoch_inputs (epoch BIGINT PRIMARY KEY, document VARCHAR NOT NULL);
    """,
    # 8: the results digest's version per epoch (NULL: 1, canonical JSON of rows; 2-4: Arrow columns, ledger/results.py).
    "ALTER TABLE epochs ADD COLUMN results_version INTEGER;",
    # 9: rewards without a primary-key index. Keeping a (epoch, VARCHAR) index cost a settlement paying 1M accounts
    # 0.8 s, more than writing the rows; settlement refuses reward lines that name an account twice before it
    # writes, the audit checks one row per (epoch, account), and readers find an epoch's rows by its zone maps.
    """
    CREATE TABLE rewards_v9 (
        epoch BIGINT NOT NULL,
        account_id VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        value DOUBLE,
        weight DOUBLE,
        consensus DOUBLE,
        incentive DOUBLE,
        dividends DOUBLE,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        stake BIGINT,
        validator_trust DOUBLE,
        model_score DOUBLE
    );
    INSERT INTO rewards_v9 SELECT epoch, account_id, role, value, weight, consensus, incentive, dividends, amount, stake,
        validator_trust, model_score FROM rewards ORDER BY epoch, account_id;
    DROP TABLE rewards;
    ALTER TABLE rewards_v9 RENAME TO rewards;
    """,
    # 10: the market pays for information (rewards.originality). Each contribution keeps its originality figures: the
    # rows judged (those that could earn), unoriginal (earn 0), below the gate's level, the gate's p-value
    # (originality_p), the median p-value of its judged rows and its value without the originality rules; a
    # submission the gate zeroed as a whole is 'unoriginal'. DuckDB cannot alter a CHECK, so contributions is rebuilt
    # with every column and row as they were (the views that read it are recreated by migrate()). epoch_values keeps
    # what each epoch's rows added to each task's lake: gain = U'(lake + the rows that played) - U'(lake) on the
    # holdout, what the epoch's data values of that task add up to.
    """
    CREATE TABLE contributions_v10 (
        submission_id VARCHAR PRIMARY KEY,
        epoch BIGINT NOT NULL,
        account_id VARCHAR,
        task VARCHAR,
        kind VARCHAR,
        rows BIGINT,
        status VARCHAR NOT NULL CHECK (status IN ('accepted', 'duplicate', 'unoriginal', 'quarantined')),
        reason VARCHAR,
        digest VARCHAR,
        public_key VARCHAR,
        nonce BIGINT,
        file VARCHAR,
        received_at TIMESTAMP,
        lake_path VARCHAR,
        duplicate_rows BIGINT,
        value DOUBLE,
        arrival BIGINT,
        verified BOOLEAN,
        suspicious VARCHAR,
        duplicate_of VARCHAR[],
        judged_rows BIGINT,
        unoriginal_rows BIGINT,
        gate_rows BIGINT,
        originality_p DOUBLE,
        median_p DOUBLE,
        value_without_originality DOUBLE
    );
    INSERT INTO contributions_v10 (submission_id, epoch, account_id, task, kind, rows, status, reason, digest,
        public_key, nonce, file, received_at, lake_path, duplicate_rows, value, arrival, verified, suspicious,
        duplicate_of)
    SELECT submission_id, epoch, account_id, task, kind, rows, status, reason, digest, public_key, nonce, file,
        received_at, lake_path, duplicate_rows, value, arrival, verified, suspicious, duplicate_of FROM contributions;
    DROP TABLE contributions;
    ALTER TABLE contributions_v10 RENAME TO contributions;
    CREATE TABLE epoch_values (
        epoch BIGINT NOT NULL,
        task VARCHAR NOT NULL,
        lake_rows BIGINT,
        new_rows BIGINT,
        admitted_rows BIGINT,
        test_rows BIGINT,
        lake_utility DOUBLE,
        gain DOUBLE,
        PRIMARY KEY (epoch, task)
    );
    """,
    # 11: each settled epoch's chain hash signed with the operator's Ed25519 key (ledger/digest.py
    # epoch_signing_message), so an operator cannot publish two histories; NULL for epochs settled before.
    "ALTER TABLE epochs ADD COLUMN operator_signature VARCHAR;",
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply any migrations the file lacks, each in its own transaction, then (re)create the users' views
    (ledger/views.py) that are missing or changed (all of them after a migration); returns the schema version."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version, ddl in enumerate(MIGRATIONS[current:], start=current + 1):
        con.execute("BEGIN TRANSACTION")
        con.execute(ddl)
        con.execute("INSERT INTO schema_version VALUES (?)", [version])
        con.execute("COMMIT")
    # Every view after a migration (it may have rebuilt a table they read); else only those missing or changed.
    create_views(con, force=current < SCHEMA_VERSION)
    return SCHEMA_VERSION
