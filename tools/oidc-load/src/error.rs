//! Errors that stop a run before or outside measurement. Failures of single iterations are
//! not errors of the run: they are counted by category (see [`crate::flow::Category`]).

use std::path::PathBuf;

/// Why a load run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An option or a combination of options is unusable.
    #[error("{0}")]
    Usage(String),
    /// The users file could not be read.
    #[error("users file {path}: {source}", path = .path.display())]
    UsersFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built (TLS set-up, CA file).
    #[error("HTTP client: {0}")]
    HttpClient(String),
    /// The CA file could not be read or parsed.
    #[error("CA file {path}: {message}", path = .path.display())]
    CaFile { path: PathBuf, message: String },
    /// The provider's discovery document could not be fetched or is unusable.
    #[error("discovery at {url}: {message}")]
    Discovery { url: String, message: String },
    /// The operating system gave no random bytes.
    #[error("random number generator: {0}")]
    Random(String),
    /// Refresh mode: no worker could sign in to obtain a refresh token.
    #[error("no refresh token could be obtained: {0}")]
    Setup(String),
    /// A worker task ended abnormally.
    #[error("worker task failed: {0}")]
    Worker(String),
}
