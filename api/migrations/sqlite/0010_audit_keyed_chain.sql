-- The audit chain becomes keyed: rows from `keyed_from` on carry an HMAC under a key derived
-- from the key-encryption key (which never enters the database); rows before it keep their
-- plain SHA-256 hashes and are verified as before. Checkpoints carry a MAC under the same key.
CREATE TABLE audit_chain_keying (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    keyed_from INTEGER NOT NULL
);
INSERT INTO audit_chain_keying (id, keyed_from)
SELECT 1, last_id + 1 FROM audit_chain_head WHERE id = 1;

ALTER TABLE audit_checkpoints ADD COLUMN mac TEXT;
CREATE INDEX audit_checkpoints_through ON audit_checkpoints (through_id);

-- Deleting a row is refused unless a checkpoint covers it: pruning writes the checkpoint
-- first. A checkpoint planted to allow a deletion carries no valid MAC, which verification
-- names.
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.id > (SELECT COALESCE(MAX(through_id), 0) FROM audit_checkpoints)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: only rows behind a checkpoint are pruned');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
CREATE TRIGGER audit_chain_keying_no_update BEFORE UPDATE ON audit_chain_keying
BEGIN
    SELECT RAISE(ABORT, 'audit_chain_keying is fixed');
END;
CREATE TRIGGER audit_chain_keying_no_delete BEFORE DELETE ON audit_chain_keying
BEGIN
    SELECT RAISE(ABORT, 'audit_chain_keying is fixed');
END;

UPDATE novads_schema_version SET version = 10, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
