-- Pending authorization requests are no longer stored: the login form carries them sealed
-- (api/src/oidc/sealed_request.rs). What the database keeps is which of them have ended, so
-- that one sealed request yields at most one code: finishing a sign-in inserts the request's
-- id here in the transaction that issues the code, and a second insert of the same id changes
-- nothing and issues nothing. A row is kept until its request could no longer be opened.
CREATE TABLE oidc_used_requests (
    id_hash    TEXT    PRIMARY KEY,  -- SHA-256 of the request id inside the sealed request
    expires_at INTEGER NOT NULL      -- unix milliseconds: the request's own expiry
);
CREATE INDEX oidc_used_requests_expires_at ON oidc_used_requests (expires_at);

-- oidc_authorization_requests is no longer read or written; it stays for replicas of the
-- previous version still serving during a rolling upgrade, and a later migration drops it.

UPDATE novads_schema_version SET version = 19, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
