-- The audit trail: one row per authentication attempt, append-only and hash-chained.
-- Each row's hash covers its content and the previous row's hash, so an edited, inserted or
-- deleted row breaks the chain at that point (`novads audit verify` names it).
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY,
    at         TEXT    NOT NULL,  -- RFC 3339, UTC, microseconds: the exact text that is hashed
    event      TEXT    NOT NULL,
    realm      TEXT,
    username   TEXT,
    subject    TEXT,
    client_id  TEXT,
    source_ip  TEXT,
    user_agent TEXT,
    reason     TEXT,
    directory  TEXT,
    latency_ms INTEGER NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_realm_at ON audit_events (realm, at);

-- The end of the chain, updated in the same transaction as each append; a single row that
-- serialises writers.
CREATE TABLE audit_chain_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_id   INTEGER NOT NULL,
    last_hash TEXT    NOT NULL
);
INSERT INTO audit_chain_head (id, last_id, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Rows never change. Pruning old rows goes through audit_checkpoints (see the code).
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- Where verification starts after old rows were pruned: the last pruned row's id and hash.
CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY,
    pruned_at  TEXT    NOT NULL,
    through_id INTEGER NOT NULL,
    through_hash TEXT  NOT NULL
);

-- Brute-force protection: failure counters per account and per source address, in the
-- database so that every replica sees the same numbers.
CREATE TABLE login_throttle (
    key           TEXT    PRIMARY KEY,
    failures      INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,  -- unix milliseconds
    locked_until  INTEGER            -- unix milliseconds
);

UPDATE novads_schema_version SET version = 2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
