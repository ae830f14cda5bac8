//! Whether an apply would change anything, decided from the controller's caches alone, so
//! that a converged server costs the API server no request at all.
//!
//! An object is current when (1) every field the operator would apply has that value in the
//! cached object — which catches drift, such as `virtctl stop` rewriting `runStrategy` — and
//! (2) the cached object carries the [`APPLIED_ANNOTATION`] digest of the body to be applied —
//! which catches a field the operator stopped setting (the cached object still has it, and
//! only an apply without it removes it). Fields the API server or others add (defaults,
//! status, a Service's `clusterIP`) do not count.
//!
//! A cache that lags behind can only cost a redundant apply, never a missed one: a change the
//! cache has not seen yet arrives as a watch event, which reconciles the server again.

use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The digest of the body the operator last applied to a child (and, on the VirtualMachine,
/// of the cloud-init Secret applied with it).
pub const APPLIED_ANNOTATION: &str = "novads.io/applied";

/// `object` with the [`APPLIED_ANNOTATION`] digest of `object` itself and of `with` (objects
/// applied together with it and not cached themselves).
pub fn stamped<K: ResourceExt + Serialize>(mut object: K, with: &[&dyn erased::Body]) -> K {
    object.annotations_mut().remove(APPLIED_ANNOTATION);
    let digest = digest(&object, with);
    object
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.to_string(), digest);
    object
}

/// Whether applying `desired` (already [`stamped`]) over `live` (the cached object) would
/// change nothing the operator manages.
pub fn is_current<K: ResourceExt + Serialize>(live: Option<&K>, desired: &K) -> bool {
    let Some(live) = live else {
        return false;
    };
    let stamp = |object: &K| object.annotations().get(APPLIED_ANNOTATION).cloned();
    if stamp(live).is_none() || stamp(live) != stamp(desired) {
        return false;
    }
    match (serde_json::to_value(live), serde_json::to_value(desired)) {
        (Ok(live), Ok(desired)) => covers(&live, &desired),
        // Cannot tell: apply.
        _ => false,
    }
}

/// Whether every field of `desired` has the same value in `live`. Lists must match item by
/// item (an apply replaces the operator's list items), maps only in the keys `desired` has.
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, wanted)| match live.get(key) {
                Some(have) => covers(have, wanted),
                None => wanted.is_null(),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| covers(l, d))
        }
        (live, desired) => live == desired,
    }
}

fn digest<K: Serialize>(object: &K, with: &[&dyn erased::Body]) -> String {
    let mut hasher = Sha256::new();
    for body in std::iter::once(erased::json(object)).chain(with.iter().map(|b| b.json())) {
        // Length-prefixed, so that two bodies never read as another pair.
        hasher.update((body.len() as u64).to_be_bytes());
        hasher.update(&body);
    }
    let digest = hasher.finalize();
    // 128 bits are plenty to tell bodies apart; an annotation stays short.
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Bodies of different kinds, serialised the same way.
pub mod erased {
    use serde::Serialize;

    /// Anything serialisable to the JSON an apply sends.
    pub trait Body {
        fn json(&self) -> Vec<u8>;
    }

    impl<T: Serialize> Body for T {
        fn json(&self) -> Vec<u8> {
            json(self)
        }
    }

    pub(super) fn json<T: Serialize + ?Sized>(object: &T) -> Vec<u8> {
        // A body that cannot be serialised cannot be applied either; an empty one only makes
        // the digest differ, so the apply goes ahead and reports the error.
        serde_json::to_vec(object).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;

    fn service(value: Value) -> Service {
        serde_json::from_value(value).expect("service")
    }

    fn desired() -> Service {
        stamped(
            service(json!({
                "metadata": { "name": "web", "namespace": "muni-talsi", "labels": { "a": "1" } },
                "spec": { "selector": { "s": "web" }, "ports": [{ "name": "p443", "port": 443 }] }
            })),
            &[],
        )
    }

    /// The desired Service as the API server holds it: defaults and status added.
    fn live() -> Service {
        let mut live = serde_json::to_value(desired()).expect("JSON");
        live["metadata"]["uid"] = json!("uid-1");
        live["spec"]["clusterIP"] = json!("10.96.0.10");
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        live["spec"]["ports"][0]["targetPort"] = json!(443);
        service(live)
    }

    #[test]
    fn defaults_and_status_do_not_count_but_drift_and_removed_fields_do() {
        assert!(is_current(Some(&live()), &desired()));
        assert!(!is_current(None, &desired()));

        // Someone changed a field the operator manages.
        let mut drifted = serde_json::to_value(live()).expect("JSON");
        drifted["spec"]["ports"][0]["port"] = json!(8443);
        assert!(!is_current(Some(&service(drifted)), &desired()));

        // An extra list item (a port someone added) is drift too.
        let mut extra = serde_json::to_value(live()).expect("JSON");
        extra["spec"]["ports"]
            .as_array_mut()
            .expect("ports")
            .push(json!({ "name": "p22", "port": 22 }));
        assert!(!is_current(Some(&service(extra)), &desired()));

        // The operator stops setting a label: the cached object still has it, and only the
        // digest tells that the apply would remove it.
        let mut fewer = serde_json::to_value(desired()).expect("JSON");
        fewer["metadata"]["labels"] = json!({});
        fewer["metadata"]["annotations"] = json!({});
        let fewer = stamped(service(fewer), &[]);
        let mut fewer_body = serde_json::to_value(&fewer).expect("JSON");
        fewer_body["metadata"]["annotations"] = json!({});
        assert!(covers(
            &serde_json::to_value(live()).expect("JSON"),
            &fewer_body
        ));
        assert!(!is_current(Some(&live()), &fewer));

        // An object the operator never stamped is applied once.
        let mut unstamped = serde_json::to_value(live()).expect("JSON");
        unstamped["metadata"]["annotations"] = json!({});
        assert!(!is_current(Some(&service(unstamped)), &desired()));
    }

    #[test]
    fn the_digest_covers_the_bodies_applied_with_the_object() {
        let secret = json!({ "data": { "userdata": "b2xk" } });
        let changed = json!({ "data": { "userdata": "bmV3" } });
        let with_old = stamped(desired(), &[&secret]);
        let with_new = stamped(desired(), &[&changed]);
        assert_ne!(
            with_old.annotations().get(APPLIED_ANNOTATION),
            with_new.annotations().get(APPLIED_ANNOTATION)
        );
        assert!(!is_current(Some(&with_old), &with_new));
        assert!(is_current(Some(&with_old), &stamped(desired(), &[&secret])));
    }
}
