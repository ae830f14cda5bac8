-- Idempotency-Key of the admin API's creates (docs/admin-api.md): the first answer to a key is
-- kept for 24 hours, so a client that retries a create it is unsure about gets the same answer
-- without a second write. Keys belong to the caller (the token's subject): nobody replays or
-- blocks another's. A row without a status is a request still in flight.
CREATE TABLE admin_idempotency_keys (
    subject          TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,     -- SHA-256 (hex) of method, path and body
    status           BIGINT,               -- the answer's HTTP status; NULL while in flight
    response         TEXT,                 -- the answer's body and headers, as JSON
    created_at       BIGINT  NOT NULL,      -- unix milliseconds
    expires_at       BIGINT  NOT NULL,      -- unix milliseconds: swept after this
    PRIMARY KEY (subject, idempotency_key)
);
CREATE INDEX admin_idempotency_keys_expires_at ON admin_idempotency_keys (expires_at);

UPDATE novads_schema_version SET version = 17, updated_at = now() WHERE id = 1;
