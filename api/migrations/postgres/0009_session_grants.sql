-- The grants (code, refresh-token family, access tokens) issued through a single sign-on
-- session, so that logging out revokes them for every application, not only the cookie.
CREATE TABLE oidc_session_grants (
    session_hash TEXT   NOT NULL,  -- oidc_sessions.id_hash
    grant_id     TEXT   NOT NULL,
    expires_at   BIGINT NOT NULL,  -- unix milliseconds
    PRIMARY KEY (session_hash, grant_id)
);

UPDATE novads_schema_version SET version = 9, updated_at = now() WHERE id = 1;
