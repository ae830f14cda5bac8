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
}
