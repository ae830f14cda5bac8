//! Short texts of cached objects. The words KubeVirt and Kubernetes repeat in every object
//! (phases, condition types and statuses) are kept as references to one static copy, anything
//! else in an allocation of its own sized to fit.

use std::ops::Deref;

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
];

/// A text read from a cached object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Text {
    Word(&'static str),
    Other(Box<str>),
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
