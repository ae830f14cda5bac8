-- Every token issued from one authorization code belongs to one grant: the code records the
-- grant's id, the refresh tokens carry it as their family, and access tokens carry it as a
-- claim. A replayed code revokes the grant (RFC 6749 4.1.2). Codes issued before this migration
-- have none; they expire within a minute of it.
ALTER TABLE oidc_codes ADD COLUMN grant_id TEXT;

-- Revoked access tokens, by grant or by the token's own `jti`. Access tokens are signed JWTs
-- that live 10 minutes; the provider's own endpoints (userinfo, introspection) look them up
-- here, one primary-key probe per token. A row is needed only as long as a token it names can
-- still be valid, so it expires with them and the sweep deletes it.
CREATE TABLE oidc_revocations (
    kind        TEXT    NOT NULL CHECK (kind IN ('grant', 'token')),
    id          TEXT    NOT NULL,     -- the grant id, or the access token's jti
    revoked_at  BIGINT  NOT NULL,     -- unix milliseconds
    expires_at  BIGINT  NOT NULL,     -- unix milliseconds: no token it names is valid after this
    PRIMARY KEY (kind, id)
);
CREATE INDEX oidc_revocations_expires_at ON oidc_revocations (expires_at);

UPDATE novads_schema_version SET version = 7, updated_at = now() WHERE id = 1;
