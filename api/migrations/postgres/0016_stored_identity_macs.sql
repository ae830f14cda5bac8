-- Every authorization code, single sign-on session and refresh token carries a MAC over whom
-- it names (the stored identity) and what it grants, under a key derived from the
-- key-encryption key (which never enters the database; api/src/oidc/keys/identity_mac.rs). A
-- row whose MAC does not authenticate it is refused: a database writer cannot make a code, a
-- session or a refresh token name someone else.
ALTER TABLE oidc_codes ADD COLUMN mac TEXT;
ALTER TABLE oidc_sessions ADD COLUMN mac TEXT;
ALTER TABLE oidc_refresh_tokens ADD COLUMN mac TEXT;

-- Rows written before this migration have no MAC and would be refused anyway; they are
-- short-lived (codes minutes, sessions hours, refresh tokens days), so they are removed, and
-- every user signs in once more (docs/upgrade.md). The grants recorded for sessions stay, so
-- that logging out with an old cookie still revokes its access tokens. From here on a refused
-- row always means a changed one.
DELETE FROM oidc_codes;
DELETE FROM oidc_sessions;
DELETE FROM oidc_refresh_tokens;

UPDATE novads_schema_version SET version = 16, updated_at = now() WHERE id = 1;
