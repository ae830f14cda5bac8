-- Every signing-key row carries a MAC over kid, algorithm, state, not_after and the public JWK,
-- under a key derived from the key-encryption key (which never enters the database). A row
-- without a valid MAC is neither published in the JWKS nor trusted when verifying a token, so
-- a database writer cannot plant a key. Rows written before this migration get their MAC at
-- the next start, once their sealed private key has been shown to open under the
-- key-encryption key and to match the public JWK.
ALTER TABLE oidc_signing_keys ADD COLUMN mac TEXT;

UPDATE novads_schema_version SET version = 11, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = 1;
