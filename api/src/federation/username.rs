//! What a person types into the username field, turned into a user name and a realm.
//!
//! Accepted forms: `jana@talsi`, `TALSI\jana`, or `jana` when a default realm applies.
//! Input is trimmed and NFKC-normalised (full-width and compatibility characters fold to their
//! plain forms), and matched case-insensitively. Look-alike letters from other scripts are *not*
//! folded: `јana` with a Cyrillic `ј` is a different, unknown name.

use unicode_normalization::UnicodeNormalization;

/// Longest raw input examined at all; longer input is refused before any processing.
pub const MAX_INPUT_BYTES: usize = 1024;
/// Longest user name after normalisation.
pub const MAX_NAME_CHARS: usize = 256;

/// A parsed sign-in name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    /// NFKC-normalised, lowercased user name (without the realm).
    pub user: String,
    /// Realm name, lowercased.
    pub realm: String,
}

impl LoginName {
    /// `user@realm`, the form used in tokens and the audit trail.
    pub fn qualified(&self) -> String {
        format!("{}@{}", self.user, self.realm)
    }
}

/// Why a sign-in name was refused. Shown to no one but the audit trail and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("the username is empty")]
    Empty,
    #[error("the username is too long")]
    TooLong,
    #[error("the username contains control characters")]
    ControlCharacter,
    #[error("the username names no realm and there is no default realm")]
    NoRealm,
    #[error("the realm part is not a realm name")]
    BadRealm,
}

/// Parses `input` into user and realm. `default_realm` applies to a bare name.
pub fn parse_login_name(
    input: &str,
    default_realm: Option<&str>,
) -> Result<LoginName, UsernameError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(UsernameError::TooLong);
    }
    let trimmed = input.trim();
    if trimmed.chars().any(char::is_control) {
        return Err(UsernameError::ControlCharacter);
    }
    let normalised: String = trimmed.nfkc().collect();
    // NFKC can turn compatibility characters into control characters; check again.
    if normalised.chars().any(char::is_control) {
        return Err(UsernameError::ControlCharacter);
    }
    let (user, realm) = if let Some((user, realm)) = normalised.rsplit_once('@') {
        (user, realm.to_owned())
    } else if let Some((realm, user)) = normalised.split_once('\\') {
        (user, realm.to_owned())
    } else {
        let realm = default_realm.ok_or(UsernameError::NoRealm)?;
        (normalised.as_str(), realm.to_owned())
    };
    let user = user.trim().to_lowercase();
    let realm = realm.trim().to_lowercase();
    if user.is_empty() {
        return Err(UsernameError::Empty);
    }
    if user.chars().count() > MAX_NAME_CHARS {
        return Err(UsernameError::TooLong);
    }
    if realm.is_empty()
        || realm.len() > 63
        || !realm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(UsernameError::BadRealm);
    }
    if user.contains('@') || user.contains('\\') {
        return Err(UsernameError::BadRealm);
    }
    Ok(LoginName { user, realm })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> Result<(String, String), UsernameError> {
        parse_login_name(input, Some("demo")).map(|n| (n.user, n.realm))
    }

    fn ok(user: &str, realm: &str) -> Result<(String, String), UsernameError> {
        Ok((user.to_owned(), realm.to_owned()))
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(parsed("jana@talsi"), ok("jana", "talsi"));
        assert_eq!(parsed("TALSI\\Jana"), ok("jana", "talsi"));
        assert_eq!(parsed("  Jana@Talsi \t"), ok("jana", "talsi"));
        assert_eq!(parsed("jana"), ok("jana", "demo"));
        assert_eq!(parsed("jānis.bērziņš@talsi"), ok("jānis.bērziņš", "talsi"));
        assert_eq!(parse_login_name("jana", None), Err(UsernameError::NoRealm));
    }

    #[test]
    fn nfkc_folds_compatibility_forms_but_not_other_scripts() {
        // Full-width letters are the same name.
        assert_eq!(parsed("ｊａｎａ@talsi"), ok("jana", "talsi"));
        // Cyrillic ј (U+0458) stays itself: a different name, never Latin "jana".
        let (user, _) = parsed("\u{0458}ana@talsi").expect("parses");
        assert_ne!(user, "jana");
        // Decomposed and composed ā are one name.
        assert_eq!(parsed("ja\u{0304}nis@talsi"), parsed("jānis@talsi"));
    }

    #[test]
    fn refused_input() {
        assert_eq!(parsed(""), Err(UsernameError::Empty));
        assert_eq!(parsed("   "), Err(UsernameError::Empty));
        assert_eq!(parsed("@talsi"), Err(UsernameError::Empty));
        assert_eq!(parsed("jana@"), Err(UsernameError::BadRealm));
        assert_eq!(parsed("jana@tal si"), Err(UsernameError::BadRealm));
        assert_eq!(parsed("jana@talsi.lv"), Err(UsernameError::BadRealm));
        assert_eq!(
            parsed("ja\u{0000}na@talsi"),
            Err(UsernameError::ControlCharacter)
        );
        assert_eq!(parsed("jana\n@talsi"), Err(UsernameError::ControlCharacter));
        assert_eq!(parsed(&"a".repeat(10 * 1024)), Err(UsernameError::TooLong));
        assert_eq!(
            parsed(&format!("{}@talsi", "a".repeat(300))),
            Err(UsernameError::TooLong)
        );
        assert_eq!(parsed("a@b@talsi"), Err(UsernameError::BadRealm));
    }

    #[test]
    fn filter_metacharacters_survive_parsing_unchanged() {
        // Escaping is the directory's job; parsing must neither strip nor reject them silently.
        assert_eq!(parsed("*)(uid=*@talsi"), ok("*)(uid=*", "talsi"));
    }
}
