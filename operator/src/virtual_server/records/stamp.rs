//! The digests a child carries of what the operator applied to it and of the fields it owns
//! (`controller::unchanged`): all a reconcile needs to tell an unchanged child.

use std::collections::BTreeMap;

use compact_str::CompactString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::virtual_server::controller::unchanged::{APPLIED_ANNOTATION, LIVE_ANNOTATION};

/// The operator's two annotations of a child, the second noted by the watch
/// (`unchanged::record_live`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    applied: Option<Digest>,
    live: Option<Digest>,
}

/// An annotation's value: the operator's digests are 128 bits in lowercase hex, kept as their
/// bytes; anything else (someone edited the annotation) as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Digest {
    Bytes([u8; 16]),
    Text(CompactString),
}

impl Digest {
    fn of(value: &str) -> Self {
        let mut bytes = [0u8; 16];
        // Only lowercase hex reads back as it was written: anything else stays text.
        let lowercase_hex = !value.bytes().any(|b| b.is_ascii_uppercase())
            && hex::decode_to_slice(value, &mut bytes).is_ok();
        if lowercase_hex {
            Self::Bytes(bytes)
        } else {
            Self::Text(value.into())
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Bytes(bytes) => hex::encode(bytes),
            Self::Text(text) => text.to_string(),
        }
    }
}

impl Stamp {
    pub fn of(meta: &ObjectMeta) -> Self {
        let annotation = |key: &str| {
            meta.annotations
                .as_ref()
                .and_then(|annotations| annotations.get(key))
                .map(|value| Digest::of(value))
        };
        Self {
            applied: annotation(APPLIED_ANNOTATION),
            live: annotation(LIVE_ANNOTATION),
        }
    }

    /// The annotations to read back (`None` when there were none of the operator's).
    pub fn annotations(&self) -> Option<BTreeMap<String, String>> {
        let annotations: BTreeMap<String, String> = [
            (APPLIED_ANNOTATION, &self.applied),
            (LIVE_ANNOTATION, &self.live),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_string(), value.as_ref()?.text())))
        .collect();
        (!annotations.is_empty()).then_some(annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_edited_annotations_read_back_as_they_were() {
        for value in [
            "8cd39af138c6ae3660563514dbf0ae79",
            "00000000000000000000000000000000",
            "8CD39AF138C6AE3660563514DBF0AE79",
            "8cd39af138c6ae3660563514dbf0ae7",
            "8cd39af138c6ae3660563514dbf0ae7g",
            "",
            "edited by hand",
        ] {
            assert_eq!(Digest::of(value).text(), value);
        }
        assert!(matches!(
            Digest::of("8cd39af138c6ae3660563514dbf0ae79"),
            Digest::Bytes(_)
        ));
    }
}
