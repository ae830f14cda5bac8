-- When a counter last counted a failure: a busy source waits from its latest failure, and is
-- told how long (HTTP 429 with Retry-After) instead of being held inside the request.
ALTER TABLE login_throttle ADD COLUMN last_failure BIGINT;  -- unix milliseconds

UPDATE novads_schema_version SET version = 8, updated_at = now() WHERE id = 1;
