//! An embedded directory of users with argon2id password hashes, for development and very
//! small sites.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AccountListing, DirectoryAccount, DirectoryAnswer, DirectoryFailure, DirectoryUser};
use crate::config::StaticDirectoryConfig;
use crate::federation::hash_work;

struct Entry {
    user: DirectoryUser,
    password_hash: String,
    disabled: bool,
}

/// Users of one static realm, by lowercased username.
pub struct StaticDirectory {
    users: Arc<HashMap<String, Entry>>,
}

/// A valid hash of a random password: unknown users are checked against it so that a wrong
/// username costs as much time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm92YWRzLWR1bW15LXNhbHQ$Xv3bXJUyL0PYd8JmD1bFZ9K9Tm4n1yDbl4s3kZl0xJ8";

impl StaticDirectory {
    pub fn new(config: &StaticDirectoryConfig) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                let key = u.username.to_lowercase();
                let entry = Entry {
                    user: DirectoryUser {
                        id: key.clone(),
                        username: u.username.clone(),
                        email: u.email.clone(),
                        name: u.name.clone(),
                        groups: u.groups.clone(),
                    },
                    password_hash: u.password_hash.clone(),
                    disabled: u.disabled,
                };
                (key, entry)
            })
            .collect();
        Self {
            users: Arc::new(users),
        }
    }

    pub async fn authenticate(&self, username: &str, password: &str) -> DirectoryAnswer {
        let entry = self.users.get(username);
        let hash = entry.map_or(DUMMY_HASH, |e| e.password_hash.as_str());
        // argon2 is deliberately slow: off the async workers, under the process-wide limit.
        // An unknown user costs the same verification, against the dummy hash.
        let matches = match hash_work::verify(hash.to_owned(), password.to_owned()).await {
            Ok(matches) => !password.is_empty() && matches,
            Err(busy) => {
                return DirectoryAnswer {
                    result: Err(DirectoryFailure::Unavailable(busy.to_string())),
                    server: None,
                };
            }
        };
        let result = match entry {
            None => Err(DirectoryFailure::UnknownUser),
            Some(_) if !matches => Err(DirectoryFailure::BadCredentials),
            Some(e) if e.disabled => Err(DirectoryFailure::AccountDisabled(
                "disabled in the configuration".into(),
            )),
            Some(e) => Ok(e.user.clone()),
        };
        DirectoryAnswer {
            result,
            server: None,
        }
    }

    /// The configured users, by username, at most `limit`. They are written by hand, so each
    /// counts as a person; creation times are unknown.
    pub fn accounts(&self, limit: usize) -> AccountListing {
        let mut accounts: Vec<DirectoryAccount> = self
            .users
            .iter()
            .map(|(key, entry)| DirectoryAccount {
                id: entry.user.id.clone(),
                username: key.clone(),
                groups: entry.user.groups.clone(),
                enabled: !entry.disabled,
                person: true,
                created: None,
            })
            .collect();
        accounts.sort_by(|a, b| a.username.cmp(&b.username));
        let truncated = accounts.len() > limit;
        accounts.truncate(limit);
        AccountListing {
            accounts,
            truncated,
        }
    }

    pub fn lookup(&self, username: &str) -> DirectoryAnswer {
        let result = match self.users.get(username) {
            None => Err(DirectoryFailure::UnknownUser),
            Some(e) if e.disabled => Err(DirectoryFailure::AccountDisabled(
                "disabled in the configuration".into(),
            )),
            Some(e) => Ok(e.user.clone()),
        };
        DirectoryAnswer {
            result,
            server: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticUserConfig;
    use crate::dev::DEMO_USERS;

    fn directory(disabled: bool) -> StaticDirectory {
        let demo = &DEMO_USERS[0];
        StaticDirectory::new(&StaticDirectoryConfig {
            users: vec![StaticUserConfig {
                username: "Anna".into(),
                password_hash: demo.password_hash.into(),
                email: None,
                name: None,
                groups: vec!["staff".into()],
                disabled,
            }],
        })
    }

    #[tokio::test]
    async fn right_password_signs_in() {
        let answer = directory(false)
            .authenticate("anna", DEMO_USERS[0].password)
            .await;
        let user = answer.result.expect("signed in");
        assert_eq!(user.username, "Anna");
        assert_eq!(user.groups, vec!["staff".to_owned()]);
    }

    #[tokio::test]
    async fn failures_say_why() {
        let dir = directory(false);
        assert_eq!(
            dir.authenticate("anna", "wrong").await.result,
            Err(DirectoryFailure::BadCredentials)
        );
        assert_eq!(
            dir.authenticate("anna", "").await.result,
            Err(DirectoryFailure::BadCredentials)
        );
        assert_eq!(
            dir.authenticate("nobody", "x").await.result,
            Err(DirectoryFailure::UnknownUser)
        );
        let disabled = directory(true);
        assert!(matches!(
            disabled
                .authenticate("anna", DEMO_USERS[0].password)
                .await
                .result,
            Err(DirectoryFailure::AccountDisabled(_))
        ));
        // A disabled account with a wrong password is just a wrong password: no oracle.
        assert_eq!(
            disabled.authenticate("anna", "wrong").await.result,
            Err(DirectoryFailure::BadCredentials)
        );
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(argon2::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
