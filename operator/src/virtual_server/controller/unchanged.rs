//! Whether an apply would change anything, decided from the controller's caches alone, so
//! that a converged server costs the API server no request at all.
//!
//! The caches do not keep the children whole. When a watch event of a child arrives (before
//! its managedFields are dropped), [`record_live`] notes on the cached copy a digest of the
//! *live values of the fields the operator's field manager owns* — the fields its `Apply`
//! entry in `managedFields` lists ([`LIVE_ANNOTATION`]); the rest of the object can then be
//! trimmed away. After an apply, that field set is exactly the applied body's, so the digest
//! equals [`desired_digest`] of the body, computed the same canonical way. An object is
//! current when (1) it carries the [`APPLIED_ANNOTATION`] digest of the body to be applied —
//! which catches a field the operator stopped setting — and (2) its live digest equals the
//! body's — which catches drift: a field someone else changed either moved to their manager
//! (it leaves the operator's set) or has another value (`virtctl stop` rewriting
//! `runStrategy`), and an item someone added to a list the operator keys (a port added to the
//! Service by hand) is counted as well. Fields the API server or others add (defaults, status,
//! a Service's `clusterIP`) are not in the set and do not count.
//!
//! Any difference makes the object look changed, so a mismatch can only cost a redundant
//! apply, never a missed one; likewise a cache that lags behind: a change it has not seen yet
//! arrives as a watch event, which reconciles the server again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::reconcile::FIELD_MANAGER;

/// The digest of the body the operator last applied to a child (and, on the VirtualMachine,
/// of the cloud-init Secret applied with it).
pub const APPLIED_ANNOTATION: &str = "novads.io/applied";

/// On the cache's copy of a child only (never written to the API; a value found on an object
/// is overwritten): the digest of the live values of the fields the operator's field manager
/// owns, taken from the watch event (see [`record_live`]).
pub const LIVE_ANNOTATION: &str = "novads.io/live-managed-fields";

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

/// Whether applying `desired` (already [`stamped`]) over `live` (the cached copy, recorded by
/// [`record_live`]) would change nothing the operator manages.
pub fn is_current<K: ResourceExt + Serialize>(live: Option<&K>, desired: &K) -> bool {
    let Some(live) = live else {
        return false;
    };
    let annotation = |object: &K, key: &str| object.annotations().get(key).cloned();
    let stamp = annotation(live, APPLIED_ANNOTATION);
    if stamp.is_none() || stamp != annotation(desired, APPLIED_ANNOTATION) {
        return false;
    }
    match (annotation(live, LIVE_ANNOTATION), desired_digest(desired)) {
        (Some(live), Some(desired)) => live == desired,
        // Nothing recorded, or the body cannot be serialised: apply.
        _ => false,
    }
}

/// Notes on `object`, as a watch delivers it, the digest of the live values of the fields the
/// operator's field manager owns ([`LIVE_ANNOTATION`]); without an `Apply` entry of the
/// operator (an object it never applied) the annotation is removed, so the object counts as
/// changed. Run before managedFields are dropped.
pub fn record_live<K: Resource + Serialize>(object: &mut K) {
    let digest = owned_fields(object.meta().managed_fields.as_deref().unwrap_or_default())
        .and_then(|fields| {
            let live = serde_json::to_value(&*object).ok()?;
            Some(canonical_digest(&project(&live, fields)))
        });
    let annotations = object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default);
    match digest {
        Some(digest) => annotations.insert(LIVE_ANNOTATION.to_string(), digest),
        None => annotations.remove(LIVE_ANNOTATION),
    };
}

/// The digest [`record_live`] notes on a child right after `desired` was applied: the body
/// as sent, without what identifies the object rather than sets a field (`apiVersion`,
/// `kind`, `metadata.name`, `metadata.namespace`: the API server lists none of them as owned).
pub fn desired_digest<K: Serialize>(desired: &K) -> Option<String> {
    let mut body = serde_json::to_value(desired).ok()?;
    let object = body.as_object_mut()?;
    object.remove("apiVersion");
    object.remove("kind");
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("name");
        meta.remove("namespace");
        // Only the cache's copy has it; the body never does.
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(LIVE_ANNOTATION);
        }
    }
    Some(canonical_digest(&body))
}

/// The field set (FieldsV1) of the operator's `Apply` entry, if it has one.
fn owned_fields(entries: &[ManagedFieldsEntry]) -> Option<&Value> {
    entries
        .iter()
        .find(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().unwrap_or_default().is_empty()
        })
        .and_then(|entry| entry.fields_v1.as_ref())
        .map(|fields| &fields.0)
}

/// What a list item the operator does not own turns into in a projection: it makes the
/// projection differ from any body, so the object counts as changed.
const UNOWNED_ITEM: &str = "(an item another manager added)";

/// The parts of `live` that the field set `fields` (FieldsV1) names: `f:<name>` a member,
/// `k:<json>` a list item by its key fields, `v:<json>` a list item by value, `i:<n>` a list
/// item by index, `.` the node itself. A leaf (`{}`) owns the whole value (a scalar, or an
/// atomic list or map).
pub fn project(live: &Value, fields: &Value) -> Value {
    let Some(fields) = fields.as_object().filter(|f| f.keys().any(|k| k != ".")) else {
        return live.clone();
    };
    match live {
        Value::Object(members) => {
            let mut out = Map::new();
            for (key, sub) in fields {
                if let Some(name) = key.strip_prefix("f:")
                    && let Some(value) = members.get(name)
                {
                    out.insert(name.to_string(), project(value, sub));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let owned = fields.iter().find(|(key, _)| owns_item(key, index, item));
                match owned {
                    Some((_, sub)) => out.push(project(item, sub)),
                    None => out.push(Value::String(UNOWNED_ITEM.to_string())),
                }
            }
            Value::Array(out)
        }
        // The set names members of a scalar: it changed shape, which is drift.
        other => Value::Array(vec![other.clone(), Value::String(UNOWNED_ITEM.into())]),
    }
}

/// Whether the field-set key `key` names list item `item` at `index`.
fn owns_item(key: &str, index: usize, item: &Value) -> bool {
    if let Some(json) = key.strip_prefix("k:") {
        let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(json) else {
            return false;
        };
        wanted.iter().all(|(k, v)| item.get(k) == Some(v))
    } else if let Some(json) = key.strip_prefix("v:") {
        serde_json::from_str::<Value>(json).is_ok_and(|v| &v == item)
    } else if let Some(n) = key.strip_prefix("i:") {
        n.parse() == Ok(index)
    } else {
        false
    }
}

/// A digest of `value` that does not depend on the order of map keys, and in which `null`,
/// `{}` and `[]` count as absent (an applied empty map or list is not stored by the API
/// server).
fn canonical_digest(value: &Value) -> String {
    fn feed(hasher: &mut Sha256, value: &Value) {
        match value {
            Value::Object(members) => {
                let mut keys: Vec<&String> = members
                    .iter()
                    .filter(|(_, v)| !is_empty(v))
                    .map(|(k, _)| k)
                    .collect();
                keys.sort();
                hasher.update(b"{");
                for key in keys {
                    feed(hasher, &Value::String(key.clone()));
                    hasher.update(b":");
                    feed(hasher, &members[key]);
                }
                hasher.update(b"}");
            }
            Value::Array(items) => {
                hasher.update(b"[");
                for item in items {
                    feed(hasher, item);
                    hasher.update(b",");
                }
                hasher.update(b"]");
            }
            // Scalars as JSON: strings quoted and escaped, so no two values read alike.
            scalar => hasher.update(scalar.to_string().as_bytes()),
        }
    }
    let mut hasher = Sha256::new();
    feed(&mut hasher, value);
    hex(&hasher.finalize())
}

/// Whether `value` counts as absent: `null`, or a map or list with nothing present in it.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(members) => members.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn hex(digest: &[u8]) -> String {
    // 128 bits are plenty to tell bodies apart; an annotation stays short.
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The field set (FieldsV1) the API server records for the manager of an apply of `body`,
/// as a real one does for the kinds the operator applies: every member it sets; lists
/// atomic, except the map-lists the operator applies — a Service's `ports` (keyed by port
/// and protocol) and `metadata.ownerReferences` (keyed by uid). The tests and the benchmark
/// play the API server with it.
pub fn applied_field_set(body: &Value) -> Value {
    fn fields(value: &Value, path: &[&str]) -> Value {
        let mut out = Map::new();
        match value {
            Value::Object(members) => {
                for (name, member) in members {
                    if path.is_empty() && (name == "apiVersion" || name == "kind")
                        || path == ["metadata"] && (name == "name" || name == "namespace")
                        || member.is_null()
                    {
                        continue;
                    }
                    let mut inner = path.to_vec();
                    inner.push(name);
                    out.insert(format!("f:{name}"), fields(member, &inner));
                }
                if !path.is_empty() && !members.is_empty() {
                    out.insert(".".into(), Value::Object(Map::new()));
                }
                // An empty map is owned whole.
                if members.is_empty() {
                    out.clear();
                }
            }
            Value::Array(items) => {
                let keys: &[&str] = match path {
                    ["spec", "ports"] => &["port", "protocol"],
                    ["metadata", "ownerReferences"] => &["uid"],
                    _ => &[],
                };
                if !keys.is_empty() {
                    for item in items {
                        let key: Map<String, Value> = keys
                            .iter()
                            .filter_map(|k| Some((k.to_string(), item.get(*k)?.clone())))
                            .collect();
                        let key = format!("k:{}", Value::Object(key));
                        // An item is owned member by member (its members are not top-level
                        // ones: `apiVersion` and `kind` of an owner reference count).
                        out.insert(key, fields(item, &["item"]));
                    }
                }
            }
            _ => {}
        }
        Value::Object(out)
    }
    fields(body, &[])
}

fn digest<K: Serialize>(object: &K, with: &[&dyn erased::Body]) -> String {
    let mut hasher = Sha256::new();
    for body in std::iter::once(erased::json(object)).chain(with.iter().map(|b| b.json())) {
        // Length-prefixed, so that two bodies never read as another pair.
        hasher.update((body.len() as u64).to_be_bytes());
        hasher.update(&body);
    }
    hex(&hasher.finalize())
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
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "web", "namespace": "muni-talsi", "labels": { "a": "1" } },
                "spec": { "selector": { "s": "web" },
                          "ports": [{ "name": "tcp-443", "port": 443, "protocol": "TCP" }] }
            })),
            &[],
        )
    }

    /// `live` as the API server holds it after the operator applied `applied`, with
    /// `managedFields` as a real one records them.
    fn applied(mut live: Value, applied: &Service) -> Value {
        let body = serde_json::to_value(applied).expect("JSON");
        live["metadata"]["managedFields"] = json!([
            { "manager": "kube-controller-manager", "operation": "Update",
              "fieldsType": "FieldsV1", "fieldsV1": { "f:status": {} } },
            { "manager": FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
              "fieldsV1": applied_field_set(&body) }
        ]);
        live
    }

    /// The desired Service as the API server holds it: defaults and status added.
    fn live_value() -> Value {
        let mut live = serde_json::to_value(desired()).expect("JSON");
        live["metadata"]["uid"] = json!("uid-1");
        live["metadata"]["labels"]["added-by-someone"] = json!("x");
        live["spec"]["clusterIP"] = json!("10.96.0.10");
        live["spec"]["ports"][0]["targetPort"] = json!(443);
        live["status"] = json!({ "loadBalancer": {} });
        applied(live, &desired())
    }

    /// `live` as the cache holds it.
    fn cached(live: Value) -> Service {
        let mut object = service(live);
        record_live(&mut object);
        object.metadata.managed_fields = None;
        object
    }

    #[test]
    fn defaults_and_others_fields_do_not_count_but_drift_and_removed_fields_do() {
        assert!(is_current(Some(&cached(live_value())), &desired()));
        assert!(!is_current(None, &desired()));

        // Someone changed the value of a field the operator owns.
        let mut drifted = live_value();
        drifted["spec"]["selector"]["s"] = json!("db");
        assert!(!is_current(Some(&cached(drifted)), &desired()));

        // Someone took a field over (it left the operator's field set).
        let mut taken = live_value();
        let fields = &mut taken["metadata"]["managedFields"][1]["fieldsV1"]["f:spec"];
        fields.as_object_mut().expect("set").remove("f:selector");
        assert!(!is_current(Some(&cached(taken)), &desired()));

        // A port someone added by hand (owned by their manager) is drift too.
        let mut extra = live_value();
        extra["spec"]["ports"]
            .as_array_mut()
            .expect("ports")
            .push(json!({ "name": "ssh", "port": 22, "protocol": "TCP", "targetPort": 22 }));
        assert!(!is_current(Some(&cached(extra)), &desired()));

        // The operator stops setting a label: the stamp differs (only an apply removes it).
        let mut fewer = serde_json::to_value(desired()).expect("JSON");
        fewer["metadata"]["labels"] = json!({});
        fewer["metadata"]["annotations"] = json!({});
        assert!(!is_current(
            Some(&cached(live_value())),
            &stamped(service(fewer), &[])
        ));

        // An object the operator never applied (no Apply entry of its manager) is applied.
        let mut foreign = live_value();
        foreign["metadata"]["managedFields"][1]["manager"] = json!("kubectl");
        assert!(!is_current(Some(&cached(foreign)), &desired()));

        // A digest someone wrote on the object itself is overwritten by the watch.
        let mut forged = live_value();
        forged["spec"]["selector"]["s"] = json!("db");
        forged["metadata"]["annotations"][LIVE_ANNOTATION] =
            json!(desired_digest(&desired()).expect("digest"));
        assert!(!is_current(Some(&cached(forged)), &desired()));
    }

    #[test]
    fn a_real_api_servers_field_set_projects_the_owned_values() {
        // managedFields of a Service applied with kubectl --server-side (Kubernetes 1.30).
        let live = json!({
            "metadata": { "name": "web", "labels": { "a": "1", "b": "2" } },
            "spec": { "clusterIP": "10.96.0.10", "selector": { "s": "web" },
                      "ports": [ { "name": "tcp-443", "port": 443, "protocol": "TCP", "targetPort": 443 } ] }
        });
        let fields = json!({
            "f:metadata": { "f:labels": { "f:a": {} } },
            "f:spec": { "f:ports": { "k:{\"port\":443,\"protocol\":\"TCP\"}": {
                ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {} } },
                "f:selector": {} }
        });
        assert_eq!(
            project(&live, &fields),
            json!({
                "metadata": { "labels": { "a": "1" } },
                "spec": { "selector": { "s": "web" },
                          "ports": [ { "name": "tcp-443", "port": 443, "protocol": "TCP" } ] }
            })
        );
        let body = json!({ "metadata": { "name": "web", "labels": { "a": "1" } },
                           "spec": { "selector": { "s": "web" },
                                     "ports": [ { "name": "tcp-443", "port": 443, "protocol": "TCP" } ] } });
        let generated = applied_field_set(&body);
        assert_eq!(project(&live, &generated), project(&live, &fields));
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
        let live = cached(applied(
            serde_json::to_value(&with_old).expect("JSON"),
            &with_old,
        ));
        assert!(!is_current(Some(&live), &with_new));
        assert!(is_current(Some(&live), &stamped(desired(), &[&secret])));
    }
}
