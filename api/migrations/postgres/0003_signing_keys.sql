-- Signing keys of the OpenID Connect provider (api/src/oidc/keys.rs).
-- Per algorithm exactly one `active` key signs and one `next` key is already published in the
-- JWKS, so that relying parties hold it before it signs anything. A `retired` key stays
-- published until `not_after` (retirement + longest token lifetime + grace), so tokens it signed
-- keep verifying until they expire; rotation then deletes it.
CREATE TABLE oidc_signing_keys (
    kid          TEXT PRIMARY KEY,  -- RFC 7638 JWK thumbprint of the public key
    algorithm    TEXT NOT NULL CHECK (algorithm IN ('ES256', 'RS256')),
    state        TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    created_at   TEXT NOT NULL,     -- RFC 3339, UTC, microseconds: compares correctly as text
    activated_at TEXT,
    retired_at   TEXT,
    not_after    TEXT,              -- when a retired key stops being published
    kek_id       TEXT NOT NULL,     -- fingerprint of the key-encryption key that sealed private_key
    private_key  BYTEA NOT NULL,    -- AES-256-GCM sealed PKCS#8 (version, nonce, ciphertext+tag; AAD = kid)
    public_jwk   TEXT NOT NULL,     -- the RFC 7517 public key as published
    CHECK ((state = 'retired') = (retired_at IS NOT NULL AND not_after IS NOT NULL)),
    CHECK (state = 'next' OR activated_at IS NOT NULL)
);
-- Replicas starting or rotating at once can never leave two active (or two next) keys behind.
CREATE UNIQUE INDEX oidc_signing_keys_one_active ON oidc_signing_keys (algorithm) WHERE state = 'active';
CREATE UNIQUE INDEX oidc_signing_keys_one_next ON oidc_signing_keys (algorithm) WHERE state = 'next';

UPDATE novads_schema_version SET version = 3, updated_at = now() WHERE id = 1;
