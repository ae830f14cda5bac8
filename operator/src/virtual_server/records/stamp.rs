//! The digests a child carries of what the operator applied to it and of the fields it owns
//! (`controller::unchanged`): all a reconcile needs to tell an unchanged child.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::virtual_server::controller::unchanged::{APPLIED_ANNOTATION, LIVE_ANNOTATION};

/// The operator's two annotations of a child, as recorded by the watch (`record_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    applied: Option<Box<str>>,
    live: Option<Box<str>>,
}

impl Stamp {
    pub fn of(meta: &ObjectMeta) -> Self {
        let annotation = |key: &str| {
            meta.annotations
                .as_ref()
                .and_then(|annotations| annotations.get(key))
                .map(|value| value.as_str().into())
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
        .filter_map(|(key, value)| Some((key.to_string(), value.as_deref()?.to_string())))
        .collect();
        (!annotations.is_empty()).then_some(annotations)
    }
}
