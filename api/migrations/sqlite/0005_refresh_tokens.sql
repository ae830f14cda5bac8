-- Refresh tokens: opaque, stored as hashes, rotated on every use. All tokens descending from one
-- sign-in form a family; presenting a token that was already rotated revokes the whole family
-- (someone holds a copy).
CREATE TABLE oidc_refresh_tokens (
    token_hash  TEXT    PRIMARY KEY,
    family_id   TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    scope       TEXT    NOT NULL,
    identity    TEXT    NOT NULL,     -- JSON of the identity at the last directory check
    auth_time   INTEGER NOT NULL,     -- unix seconds of the password sign-in
    expires_at  INTEGER NOT NULL,     -- unix milliseconds
    used_at     INTEGER,              -- set when rotated
    revoked_at  INTEGER
);
CREATE INDEX oidc_refresh_tokens_family ON oidc_refresh_tokens (family_id);

UPDATE novads_schema_version SET version = 5, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
