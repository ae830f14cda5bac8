//! Short texts of cached objects. The words KubeVirt and Kubernetes repeat in every object
//! (phases, run strategies, condition types and statuses) are kept as references to one
//! static copy, anything else as a compact string (up to 24 bytes without an allocation).

use std::ops::Deref;

use compact_str::CompactString;

use crate::kubevirt::KubeVirtCondition;

/// The words held without an allocation.
const WORDS: &[&str] = &[
    "True",
    "False",
    "Unknown",
    "Ready",
    "Failure",
    "Paused",
    "DataVolumesReady",
    "LiveMigratable",
    "AgentConnected",
    "Pending",
    "Scheduling",
    "Scheduled",
    "Running",
    "Succeeded",
    "Failed",
    "InProgress",
    "Stopped",
    "Starting",
    "Stopping",
    "Provisioning",
    "Migrating",
    "Terminating",
    "CrashLoopBackOff",
    "ErrorUnschedulable",
    "Always",
    "Halted",
    "Manual",
    "RerunOnFailure",
    "Once",
    // The volume of every server's system disk.
    "system",
];

/// A text read from a cached object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Text {
    Word(&'static str),
    Other(CompactString),
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        match WORDS.iter().find(|word| **word == text) {
            Some(word) => Self::Word(word),
            None => Self::Other(text.into()),
        }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Word(word) => word,
            Self::Other(text) => text,
        }
    }
}

/// What a reconcile reads of a KubeVirt condition: its type, status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionRecord {
    type_: Text,
    status: Text,
    message: Option<Text>,
}

impl ConditionRecord {
    pub fn of(condition: &KubeVirtCondition) -> Self {
        Self {
            type_: condition.type_.as_str().into(),
            status: condition.status.as_str().into(),
            message: condition.message.as_deref().map(Text::from),
        }
    }

    pub fn condition(&self) -> KubeVirtCondition {
        KubeVirtCondition {
            type_: self.type_.to_string(),
            status: self.status.to_string(),
            message: self.message.as_deref().map(str::to_string),
            ..KubeVirtCondition::default()
        }
    }
}

/// An object's uid: the API server's are UUIDs (36 characters), kept as their 16 bytes;
/// anything else as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    Uuid([u8; 16]),
    Other(CompactString),
}

impl From<&str> for Uid {
    fn from(text: &str) -> Self {
        // Only the canonical form (hyphenated, lowercase) reads back as it was written.
        match uuid::Uuid::try_parse(text) {
            Ok(uuid) if uuid.hyphenated().to_string() == text => Self::Uuid(uuid.into_bytes()),
            _ => Self::Other(text.into()),
        }
    }
}

impl Uid {
    pub fn text(&self) -> String {
        match self {
            Self::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().to_string(),
            Self::Other(text) => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_other_texts_read_back_as_they_were() {
        for text in [
            "True",
            "Ready",
            "Running",
            "running",
            "",
            "a message of KubeVirt",
        ] {
            assert_eq!(&*Text::from(text), text);
        }
        assert!(matches!(Text::from("Ready"), Text::Word(_)));
        assert!(matches!(Text::from("ready"), Text::Other(_)));
    }

    #[test]
    fn uids_read_back_as_they_were() {
        for uid in [
            "3f2c9a1e-7b4d-4e2a-9c1f-0a1b2c3d4e5f",
            "00000000-0000-0000-0000-000000000000",
            "3F2C9A1E-7B4D-4E2A-9C1F-0A1B2C3D4E5F",
            "3f2c9a1e7b4d4e2a9c1f0a1b2c3d4e5f----",
            "3f2c9a1e-7b4d-4e2a-9c1f-0a1b2c3d4e5g",
            "uid-vm-srv-000",
            "",
        ] {
            assert_eq!(Uid::from(uid).text(), uid);
        }
        assert!(matches!(
            Uid::from("3f2c9a1e-7b4d-4e2a-9c1f-0a1b2c3d4e5f"),
            Uid::Uuid(_)
        ));
    }
}
