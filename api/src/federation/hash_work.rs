//! argon2 verifications under a process-wide limit.
//!
//! An argon2 verification (a client secret, a password of a static realm) costs tens of
//! milliseconds of a core and tens of MiB of memory, and anyone can make the service do one
//! with a wrong secret, before any authentication. Unbounded, a flood of them starves every
//! other request. So every verification takes one of twice-as-many-permits-as-cores: enough to
//! keep the cores busy while a verification's thread is being scheduled, and no more.
//!
//! A verification waits at most [`WAIT`] for a permit, then is refused as [`Busy`] (answered
//! `503` with `Retry-After`). The short wait absorbs a real burst (at 25 ms per verification,
//! four permits clear forty in 250 ms) without letting a flood queue up requests, memory and
//! latency for everyone behind it. The permit is held by the blocking task itself, so a client
//! that hangs up does not free a permit while its verification still runs. The cost of one
//! verification is bounded too: configured hashes above the caps in
//! `api/src/config/validate.rs` are refused at load.

use std::num::NonZero;
use std::sync::LazyLock;
use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use tokio::sync::Semaphore;

/// How long a verification waits for a permit before it is refused as [`Busy`].
pub const WAIT: Duration = Duration::from_millis(250);

/// What `Retry-After` tells a refused client: a flood passes, a burst clears in well under it.
pub const RETRY_AFTER_SECONDS: u64 = 1;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(permits()));

/// Twice the cores this process may use.
pub fn permits() -> usize {
    std::thread::available_parallelism().map_or(1, NonZero::get) * 2
}

/// Every permit was taken for longer than [`WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password verifications at once")]
pub struct Busy;

/// Whether `secret` matches the argon2 PHC string `hash`; a hash that does not parse never
/// matches. Runs on the blocking pool under the limit.
pub async fn verify(hash: String, secret: String) -> Result<bool, Busy> {
    let permit = tokio::time::timeout(WAIT, PERMITS.acquire())
        .await
        .map_err(|_| Busy)?
        // The semaphore is never closed.
        .map_err(|_| Busy)?;
    let matches = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    // A panicked or cancelled verification is a refusal (fail closed).
    .unwrap_or(false);
    Ok(matches)
}
