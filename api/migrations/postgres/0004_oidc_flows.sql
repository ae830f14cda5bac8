-- Authorization requests waiting for the user to sign in. The browser carries only the id;
-- everything the client asked for stays here, so the login form cannot be used to change it.
CREATE TABLE oidc_authorization_requests (
    id             TEXT    PRIMARY KEY,  -- SHA-256 of the random id in the login form
    client_id      TEXT    NOT NULL,
    redirect_uri   TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    state          TEXT,
    nonce          TEXT,
    code_challenge TEXT,
    csrf_hash      TEXT    NOT NULL,     -- SHA-256 of the CSRF token (also in a cookie)
    locale         TEXT    NOT NULL,
    expires_at     BIGINT  NOT NULL      -- unix milliseconds
);

-- Authorization codes: single use, short-lived, bound to client, redirect URI and PKCE.
CREATE TABLE oidc_codes (
    code_hash      TEXT    PRIMARY KEY,  -- SHA-256 of the code
    client_id      TEXT    NOT NULL,
    redirect_uri   TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    identity       TEXT    NOT NULL,     -- JSON of the signed-in identity
    auth_time      BIGINT  NOT NULL,     -- unix seconds
    expires_at     BIGINT  NOT NULL,     -- unix milliseconds
    used_at        BIGINT                -- set on first exchange; a second one is a replay
);

UPDATE novads_schema_version SET version = 4, updated_at = now() WHERE id = 1;
