//! The accounts the driver signs in with: given one by one, from a file, or from a pattern.

use std::fmt;

use crate::error::LoadError;

/// A user name and password, as typed into the login form.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `name:password`, split at the first colon (the password may contain colons).
    pub fn parse(spec: &str) -> Result<Self, LoadError> {
        match spec.split_once(':') {
            Some((name, password)) if !name.is_empty() => Ok(Self::new(name, password)),
            _ => Err(LoadError::Usage(format!(
                "user {:?} is not of the form name:password",
                spec.split(':').next().unwrap_or_default()
            ))),
        }
    }
}

/// A users file: one `name:password` per line; blank lines and lines starting with `#` are
/// skipped; a trailing `\r` is dropped.
pub fn parse_users_file(text: &str) -> Result<Vec<Credentials>, LoadError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(i, line)| {
            Credentials::parse(line).map_err(|_| {
                LoadError::Usage(format!("users file line {}: expected name:password", i + 1))
            })
        })
        .collect()
}

/// `count` users from patterns in which `{n}` stands for `first`, `first + 1`, ...
/// (`--user-pattern 'user{n}@talsi' --password 'Pass-{n}'`).
pub fn pattern_users(
    user_pattern: &str,
    password_pattern: &str,
    first: u64,
    count: u64,
) -> Result<Vec<Credentials>, LoadError> {
    if count == 0 {
        return Err(LoadError::Usage("--users must be at least 1".into()));
    }
    if count > 1 && !user_pattern.contains("{n}") {
        return Err(LoadError::Usage(
            "--user-pattern must contain {n} when --users is more than 1".into(),
        ));
    }
    Ok((first..first.saturating_add(count))
        .map(|n| {
            let n = n.to_string();
            Credentials::new(
                user_pattern.replace("{n}", &n),
                password_pattern.replace("{n}", &n),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_password_pairs() {
        assert_eq!(
            Credentials::parse("jana@talsi:pa:ss").expect("ok"),
            Credentials::new("jana@talsi", "pa:ss")
        );
        assert_eq!(
            Credentials::parse("anna:").expect("ok"),
            Credentials::new("anna", "")
        );
        assert!(Credentials::parse("nopassword").is_err());
        assert!(Credentials::parse(":pw").is_err());
    }

    #[test]
    fn users_files_skip_comments_and_blank_lines() {
        let users =
            parse_users_file("# bench users\r\nanna:a1\r\n\n  \npeteris:p:2\n").expect("ok");
        assert_eq!(
            users,
            vec![
                Credentials::new("anna", "a1"),
                Credentials::new("peteris", "p:2")
            ]
        );
        let error = parse_users_file("anna:a\nbroken\n").expect_err("line 2");
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn patterns_number_users() {
        let users = pattern_users("user{n}@talsi", "Pass-{n}", 1, 3).expect("ok");
        assert_eq!(users[0], Credentials::new("user1@talsi", "Pass-1"));
        assert_eq!(users[2], Credentials::new("user3@talsi", "Pass-3"));
        assert_eq!(pattern_users("jana", "pw", 0, 1).expect("ok").len(), 1);
        assert!(pattern_users("jana", "pw", 1, 2).is_err());
        assert!(pattern_users("u{n}", "pw", 1, 0).is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let shown = format!("{:?}", Credentials::new("anna", "secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
