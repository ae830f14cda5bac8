-- The audit chain becomes keyed: rows from `keyed_from` on carry an HMAC under a key derived
-- from the key-encryption key (which never enters the database); rows before it keep their
-- plain SHA-256 hashes and are verified as before. Checkpoints carry a MAC under the same key.
CREATE TABLE audit_chain_keying (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    keyed_from BIGINT  NOT NULL
);
INSERT INTO audit_chain_keying (id, keyed_from)
SELECT 1, last_id + 1 FROM audit_chain_head WHERE id = 1;

ALTER TABLE audit_checkpoints ADD COLUMN mac TEXT;
CREATE INDEX audit_checkpoints_through ON audit_checkpoints (through_id);

-- Rows never change; a row is deleted only behind a checkpoint (pruning writes it first). The
-- session setting novads.audit_prune of 0002, which any session could set, no longer opens
-- the table.
CREATE OR REPLACE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.id <= (SELECT COALESCE(MAX(through_id), 0) FROM audit_checkpoints) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_keying_fixed BEFORE UPDATE OR DELETE ON audit_chain_keying
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_keying_no_truncate BEFORE TRUNCATE ON audit_chain_keying
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Pruning, for a role that may not delete from the trail: runs as the owner of the schema
-- (the role that applies migrations). It records the checkpoint and deletes the rows it
-- covers, and refuses a row that does not exist with that hash or is younger than a day, so
-- that a role able to call it cannot erase recent rows. The search path is pinned to this
-- schema, with pg_temp last, so that nobody can shadow the tables it names.
DO $migration$
BEGIN
    EXECUTE format($function$
        CREATE FUNCTION novads_audit_prune(
            p_through_id BIGINT, p_through_hash TEXT, p_pruned_at TEXT, p_mac TEXT
        ) RETURNS BIGINT LANGUAGE plpgsql SECURITY DEFINER SET search_path = %I, pg_temp AS $body$
        DECLARE
            removed BIGINT;
        BEGIN
            IF NOT EXISTS (
                SELECT 1 FROM audit_events
                WHERE id = p_through_id AND hash = p_through_hash
                  AND at < to_char(now() AT TIME ZONE 'UTC' - INTERVAL '1 day',
                                   'YYYY-MM-DD"T"HH24:MI:SS')
            ) THEN
                RAISE EXCEPTION 'novads_audit_prune: row %% with that hash is not in the trail or is younger than a day', p_through_id;
            END IF;
            INSERT INTO audit_checkpoints (pruned_at, through_id, through_hash, mac)
            VALUES (p_pruned_at, p_through_id, p_through_hash, p_mac);
            DELETE FROM audit_events WHERE id <= p_through_id;
            GET DIAGNOSTICS removed = ROW_COUNT;
            RETURN removed;
        END;
        $body$
    $function$, current_schema());
END;
$migration$;

-- Whatever privileges other roles were given on the trail (for example by ALTER DEFAULT
-- PRIVILEGES for the application role, docs/security.md), they keep only these: read every
-- audit table, append rows, move the head. No role but the owner may delete, truncate,
-- rewrite, or attach triggers.
DO $migration$
DECLARE
    grant_row RECORD;
    taken TEXT;
BEGIN
    FOR grant_row IN
        SELECT DISTINCT c.relname,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS who
        FROM pg_class c
        CROSS JOIN LATERAL aclexplode(c.relacl) a
        LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relname IN ('audit_events', 'audit_checkpoints', 'audit_chain_head',
                            'audit_chain_keying')
          AND a.grantee <> c.relowner
    LOOP
        taken := CASE grant_row.relname
            WHEN 'audit_events' THEN 'UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'
            WHEN 'audit_chain_head' THEN 'INSERT, DELETE, TRUNCATE, TRIGGER, REFERENCES'
            ELSE 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'
        END;
        EXECUTE format('REVOKE %s ON %I FROM %s', taken, grant_row.relname, grant_row.who);
    END LOOP;
END;
$migration$;

UPDATE novads_schema_version SET version = 10, updated_at = now() WHERE id = 1;
