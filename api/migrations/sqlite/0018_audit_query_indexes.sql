-- The admin API reads pages of the trail newest first by id, filtered (api/src/admin/audit.rs).
-- An index on (column, id) serves a filtered page by reading just its rows; without one a
-- filter on a large trail scans the table (reason) or reads every row of the realm (whose
-- older index is in time order). The time index `audit_events_at` already carries the id
-- (the rowid), which a time-range page reads its ids from.
CREATE INDEX audit_events_realm_id ON audit_events (realm, id);
CREATE INDEX audit_events_reason_id ON audit_events (reason, id);

UPDATE novads_schema_version SET version = 18, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
