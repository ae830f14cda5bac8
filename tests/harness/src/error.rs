//! Errors of the command-line helpers (`ldapmodify`, `psql`, ...).

use std::io;
use std::process::ExitStatus;

/// A helper command (`ldapmodify`, `ldapsearch`, `psql`) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command could not be run at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command ran and exited unsuccessfully.
    #[error("{program} failed ({status}): {}", stderr.trim())]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl CommandError {
    /// The command's stderr, when it ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Spawn { .. } => None,
            Self::Failed { stderr, .. } => Some(stderr),
        }
    }
}
