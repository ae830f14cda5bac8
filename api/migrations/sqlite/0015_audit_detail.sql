-- What an administrator did, for rows of the admin API (`admin_action`): a JSON object with
-- the role, action, target and outcome. Hashed into the row only when present, so rows written
-- before this column existed still verify.
ALTER TABLE audit_events ADD COLUMN detail TEXT;

-- The admin API filters the trail by these, newest first.
CREATE INDEX audit_events_subject_id ON audit_events (subject, id);
CREATE INDEX audit_events_username_id ON audit_events (username, id);
CREATE INDEX audit_events_client_id_id ON audit_events (client_id, id);
CREATE INDEX audit_events_event_id ON audit_events (event, id);

UPDATE novads_schema_version SET version = 15, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
