-- The schema version this database is at. Every migration ends by setting it, so that an older
-- novads can refuse to run against a schema it does not understand.
CREATE TABLE novads_schema_version (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);

-- One row describing this installation, created once.
CREATE TABLE novads_installation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    created_at TEXT NOT NULL
);

INSERT INTO novads_installation (id, created_at) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
INSERT INTO novads_schema_version (id, version, updated_at) VALUES (1, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
