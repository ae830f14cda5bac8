//! Recently found directory entries by username, so that a repeated sign-in needs only the
//! bind (`entry_cache_seconds`).

use std::time::{Duration, Instant};

use super::DirectoryUser;

/// Most entries the cache holds; beyond it, expired entries go first, then everything.
const ENTRY_CACHE_CAPACITY: usize = 10_000;

struct CachedEntry {
    dn: String,
    user: DirectoryUser,
    expires: Instant,
}

/// Recently found entries (DN, attributes, groups) by username, so that a sign-in within
/// `ttl` of the last one needs only the bind. Off when `ttl` is zero.
pub(super) struct EntryCache {
    ttl: Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedEntry>>,
}

/// A cache hit.
pub(super) struct Cached {
    pub dn: String,
    pub user: DirectoryUser,
}

impl EntryCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, CachedEntry>> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn get(&self, username: &str) -> Option<Cached> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.lock();
        let entry = entries.get(username)?;
        (entry.expires > Instant::now()).then(|| Cached {
            dn: entry.dn.clone(),
            user: entry.user.clone(),
        })
    }

    pub(super) fn put(&self, username: &str, dn: &str, user: &DirectoryUser) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= ENTRY_CACHE_CAPACITY {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= ENTRY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            username.to_owned(),
            CachedEntry {
                dn: dn.to_owned(),
                user: user.clone(),
                expires: now + self.ttl,
            },
        );
    }

    pub(super) fn forget(&self, username: &str) {
        if !self.ttl.is_zero() {
            self.lock().remove(username);
        }
    }
}
