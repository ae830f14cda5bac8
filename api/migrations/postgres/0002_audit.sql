-- The audit trail: one row per authentication attempt, append-only and hash-chained.
-- Each row's hash covers its content and the previous row's hash, so an edited, inserted or
-- deleted row breaks the chain at that point (`novads audit verify` names it).
CREATE TABLE audit_events (
    id         BIGINT  PRIMARY KEY,
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
    latency_ms BIGINT  NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_realm_at ON audit_events (realm, at);

-- The end of the chain, locked (SELECT ... FOR UPDATE) by each append so that replicas
-- append one after another.
CREATE TABLE audit_chain_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_id   BIGINT  NOT NULL,
    last_hash TEXT    NOT NULL
);
INSERT INTO audit_chain_head (id, last_id, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Rows never change. Deleting is allowed only to the pruning code, which sets
-- novads.audit_prune for its own transaction after writing a checkpoint.
CREATE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('novads.audit_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard();

-- Where verification starts after old rows were pruned: the last pruned row's id and hash.
CREATE TABLE audit_checkpoints (
    id           BIGSERIAL PRIMARY KEY,
    pruned_at    TEXT   NOT NULL,
    through_id   BIGINT NOT NULL,
    through_hash TEXT   NOT NULL
);

-- Brute-force protection: failure counters per account and per source address, in the
-- database so that every replica sees the same numbers.
CREATE TABLE login_throttle (
    key           TEXT    PRIMARY KEY,
    failures      INTEGER NOT NULL,
    window_start  BIGINT  NOT NULL,  -- unix milliseconds
    locked_until  BIGINT             -- unix milliseconds
);

UPDATE novads_schema_version SET version = 2, updated_at = now() WHERE id = 1;
