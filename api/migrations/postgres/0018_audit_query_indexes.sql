-- The admin API reads pages of the trail newest first by id, filtered (api/src/admin/audit.rs).
-- An index on (column, id) serves a filtered page by reading just its rows; without one a
-- filter on a large trail scans the table (reason) or reads every row of the realm (whose
-- older index is in time order).
CREATE INDEX audit_events_realm_id ON audit_events (realm, id);
CREATE INDEX audit_events_reason_id ON audit_events (reason, id);

-- A time-range page picks its ids from the time index alone (an index-only scan), so the time
-- index carries the id; it replaces the index on time alone, which it covers.
CREATE INDEX audit_events_at_id ON audit_events (at, id);
DROP INDEX audit_events_at;

UPDATE novads_schema_version SET version = 18, updated_at = now() WHERE id = 1;
