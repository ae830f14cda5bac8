//! What the cache keeps of a VirtualMachineSnapshot: the operator's scheduled backups only
//! (nothing else of a server's snapshots is read from the cache), with the times, readiness,
//! phase and deletion that retention, scheduling and the status read. A server with backups
//! keeps a week or more of them, so this is the controller's largest cache.

use compact_str::CompactString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::Record;
use crate::kubevirt::{VirtualMachineSnapshot, VirtualMachineSnapshotStatus};
use crate::virtual_server::build::{BACKUP_LABEL, BACKUP_SCHEDULED, SERVER_LABEL};

/// One scheduled backup of a server.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRecord {
    /// The server label.
    server: ServerName,
    /// `metadata.creationTimestamp`, `metadata.deletionTimestamp`, `status.creationTime`, each
    /// there when its bit of `present` is set: one presence byte instead of an `Option` each.
    times: [Timestamp; 3],
    present: u8,
    ready_to_use: Option<bool>,
    phase: Option<SnapshotPhase>,
}

const CREATED: usize = 0;
const DELETING: usize = 1;
const TAKEN: usize = 2;
/// The bit of `present` telling that the snapshot has a status.
const STATUS: u8 = 1 << 3;

/// `status.phase`; the phases KubeVirt sets cost no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPhase {
    InProgress,
    Succeeded,
    Failed,
    Unknown,
    Other(CompactString),
}

impl SnapshotPhase {
    fn of(phase: &str) -> Self {
        match phase {
            "InProgress" => Self::InProgress,
            "Succeeded" => Self::Succeeded,
            "Failed" => Self::Failed,
            "Unknown" => Self::Unknown,
            other => Self::Other(other.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
            Self::Other(phase) => phase,
        }
    }
}

/// The server label of a snapshot: the operator names each backup after its server
/// (`<server>-<date>-<time>`), so the label is nearly always the start of the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerName {
    /// The first `len` bytes of the snapshot's name, which a `-` follows.
    Prefix(usize),
    Other(CompactString),
}

impl ServerName {
    fn of(server: &str, snapshot: &str) -> Self {
        match snapshot.strip_prefix(server) {
            Some(rest) if rest.starts_with('-') => Self::Prefix(server.len()),
            _ => Self::Other(server.into()),
        }
    }

    fn read<'a>(&'a self, snapshot: &'a str) -> &'a str {
        match self {
            Self::Prefix(len) => snapshot.get(..*len).unwrap_or_default(),
            Self::Other(server) => server,
        }
    }
}

impl SnapshotRecord {
    /// Whether `snapshot` (this record's name) is a backup of `server`.
    pub fn of_server(&self, snapshot: &str, server: &str) -> bool {
        self.server.read(snapshot) == server
    }

    fn time(&self, which: usize) -> Option<Time> {
        let at = self.times.get(which)?;
        (self.present & (1 << which) != 0).then_some(Time(*at))
    }
}

impl Record for SnapshotRecord {
    type Object = VirtualMachineSnapshot;

    fn record(snapshot: &VirtualMachineSnapshot) -> Option<Self> {
        let labels = snapshot.metadata.labels.as_ref()?;
        if labels.get(BACKUP_LABEL).map(String::as_str) != Some(BACKUP_SCHEDULED) {
            return None;
        }
        let status = snapshot.status.as_ref();
        let mut times = [Timestamp::UNIX_EPOCH; 3];
        let mut present = if status.is_some() { STATUS } else { 0 };
        for (which, time) in [
            (CREATED, snapshot.metadata.creation_timestamp.as_ref()),
            (DELETING, snapshot.metadata.deletion_timestamp.as_ref()),
            (TAKEN, status.and_then(|s| s.creation_time.as_ref())),
        ] {
            if let (Some(time), Some(slot)) = (time, times.get_mut(which)) {
                *slot = time.0;
                present |= 1 << which;
            }
        }
        Some(Self {
            server: ServerName::of(
                labels.get(SERVER_LABEL)?,
                snapshot.metadata.name.as_deref()?,
            ),
            times,
            present,
            ready_to_use: status.and_then(|s| s.ready_to_use),
            phase: status
                .and_then(|s| s.phase.as_deref())
                .map(SnapshotPhase::of),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> VirtualMachineSnapshot {
        VirtualMachineSnapshot {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(
                    [
                        (SERVER_LABEL.to_string(), self.server.read(name).to_string()),
                        (BACKUP_LABEL.to_string(), BACKUP_SCHEDULED.to_string()),
                    ]
                    .into(),
                ),
                creation_timestamp: self.time(CREATED),
                deletion_timestamp: self.time(DELETING),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: (self.present & STATUS != 0).then(|| VirtualMachineSnapshotStatus {
                ready_to_use: self.ready_to_use,
                creation_time: self.time(TAKEN),
                phase: self.phase.as_ref().map(|p| p.as_str().to_string()),
                ..VirtualMachineSnapshotStatus::default()
            }),
        }
    }
}
