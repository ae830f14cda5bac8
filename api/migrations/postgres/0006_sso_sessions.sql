-- Single sign-on sessions: one per browser sign-in, found by the hash of the session cookie.
-- A second application signs in without the password while the session lives; the user is
-- still re-checked in the directory every time.
CREATE TABLE oidc_sessions (
    id_hash      TEXT    PRIMARY KEY,
    identity     TEXT    NOT NULL,     -- JSON of the identity at sign-in
    auth_time    BIGINT  NOT NULL,     -- unix seconds of the password sign-in
    last_seen    BIGINT  NOT NULL,     -- unix milliseconds
    expires_at   BIGINT  NOT NULL,     -- unix milliseconds (absolute limit)
    ended_at     BIGINT
);

UPDATE novads_schema_version SET version = 6, updated_at = now() WHERE id = 1;
