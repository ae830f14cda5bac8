//! What a client writes about a cluster resource, checked before anything reaches the cluster:
//! strict JSON of the body's shape and types, and every field name of a `spec` against the
//! custom resource's own schema (the API server would silently drop unknown ones). Pure.

use kube::CustomResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a body is refused: worded for the `invalid-request` problem; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDocument {
    #[error("the body is not a {0} document: {1}")]
    Body(&'static str, String),
    #[error("unknown field{} {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    UnknownFields(Vec<String>),
    #[error(
        "{1:?} is not a {0} name: 1 to 63 lowercase letters, digits and inner hyphens, \
         starting and ending with a letter or digit"
    )]
    Name(&'static str, String),
    #[error(
        "{1:?} is not a {0} name: up to 253 lowercase letters, digits, `-` and `.`, starting \
         and ending with a letter or digit"
    )]
    Subdomain(&'static str, String),
    #[error("a new {0} needs a `{1}`")]
    Missing(&'static str, &'static str),
    #[error("the body names {what} {body:?}, the path {path:?}")]
    Mismatch {
        what: &'static str,
        body: String,
        path: String,
    },
    #[error("spec.{0}")]
    Spec(String),
}

impl From<BadDocument> for super::problem::AdminError {
    fn from(bad: BadDocument) -> Self {
        Self::InvalidRequest(bad.to_string())
    }
}

/// Names of servers (and images) are DNS labels: they name Kubernetes objects.
pub fn check_label(what: &'static str, name: &str) -> Result<(), BadDocument> {
    let bytes = name.as_bytes();
    let label = (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if label {
        Ok(())
    } else {
        Err(BadDocument::Name(what, name.to_owned()))
    }
}

/// Image names are DNS subdomains (as `spec.image` of a VirtualServer names them): up to 253
/// lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit.
pub fn check_subdomain(what: &'static str, name: &str) -> Result<(), BadDocument> {
    let bytes = name.as_bytes();
    let subdomain = (1..=253).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if subdomain {
        Ok(())
    } else {
        Err(BadDocument::Subdomain(what, name.to_owned()))
    }
}

/// Reads a body of `what`: strict JSON, each field of its type (the document types refuse
/// unknown fields themselves).
pub fn parse<D: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<D, BadDocument> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let document: D = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| BadDocument::Body(what, e.to_string()))?;
    deserializer
        .end()
        .map_err(|e| BadDocument::Body(what, e.to_string()))?;
    Ok(document)
}

/// A `spec` as written, checked: every field known to `schema` and of its type.
pub fn spec<T: DeserializeOwned>(written: &Value, schema: &Value) -> Result<T, BadDocument> {
    let mut unknown = Vec::new();
    unknown_fields(written, schema, "spec", &mut unknown);
    if !unknown.is_empty() {
        return Err(BadDocument::UnknownFields(unknown));
    }
    serde_path_to_error::deserialize(written).map_err(|e| BadDocument::Spec(e.to_string()))
}

/// `current` with the merge patch `patch` applied (RFC 7386), checked as [`spec`].
pub fn patched<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: &Value,
    schema: &Value,
) -> Result<T, BadDocument> {
    if !patch.is_object() {
        return Err(BadDocument::Spec(
            "a patch of the spec must be a JSON object".to_owned(),
        ));
    }
    let mut merged =
        serde_json::to_value(current).map_err(|e| BadDocument::Spec(format!("current: {e}")))?;
    json_patch::merge(&mut merged, patch);
    spec(&merged, schema)
}

/// The `spec` schema of custom resource `K` (crds/src), as JSON; `Null` (nothing unknown
/// found, nothing checked) only for a CRD without one, which crds' tests rule out.
pub fn spec_schema<K: CustomResourceExt>() -> Value {
    serde_json::to_value(K::crd())
        .map(|crd| {
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
        })
        .unwrap_or(Value::Null)
}

/// Appends to `unknown` the path of every object key in `value` that `schema` does not know.
fn unknown_fields(value: &Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            for (key, field) in fields {
                let at = format!("{path}.{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(known) => unknown_fields(field, known, &at, unknown),
                    None if additional.is_object() => {
                        unknown_fields(field, additional, &at, unknown)
                    }
                    None if properties.is_some() => unknown.push(at),
                    // A scalar in the schema: the typed read reports the wrong type.
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                unknown_fields(item, &schema["items"], &format!("{path}[{index}]"), unknown);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[test]
    fn labels_are_dns_labels() {
        for good in ["web", "a", "db-2", "0"] {
            assert_eq!(check_label("server", good), Ok(()), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Web", "-web", "web-", "we_b", "web.lv", long.as_str()] {
            assert!(check_label("server", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_names_are_dns_subdomains() {
        for good in ["debian-12", "ubuntu-24.04", "w2022"] {
            assert_eq!(check_subdomain("image", good), Ok(()), "{good}");
        }
        for bad in ["", "Debian", ".debian", "debian.", "deb_ian"] {
            assert!(check_subdomain("image", bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Named {
        name: String,
        spec: Value,
    }

    #[test]
    fn a_body_is_strict_json_of_its_shape() {
        let named: Named = parse("thing", br#"{"name": "web", "spec": {}}"#).expect("parses");
        assert_eq!(named.name, "web");
        for (body, says) in [
            (
                &br#"{"name": "web", "spec": {}, "kind": "Pod"}"#[..],
                "unknown field `kind`",
            ),
            (br#"{"name": 3, "spec": {}}"#, "name: invalid type"),
            (br#"{"name": "web"}"#, "missing field `spec`"),
            (br#"{"name": "w", "spec": {}} x"#, "trailing characters"),
            (b"not json", "expected"),
        ] {
            let refusal = parse::<Named>("thing", body)
                .expect_err("refused")
                .to_string();
            assert!(refusal.contains(says), "{refusal}");
        }
    }

    fn schema() -> Value {
        json!({
            "properties": {
                "cpu": { "type": "integer" },
                "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                "ports": { "type": "array", "items": { "properties": { "port": { "type": "integer" } } } },
                "extra": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
            }
        })
    }

    #[test]
    fn unknown_fields_are_found_at_any_depth_by_their_path() {
        let written = json!({
            "cpu": 2,
            "cpus": 4,
            "labels": { "any": "x" },
            "ports": [{ "port": 443 }, { "prot": 80 }],
            "extra": { "whatever": 1 },
        });
        assert_eq!(
            spec::<Value>(&written, &schema()),
            Err(BadDocument::UnknownFields(vec![
                "spec.cpus".into(),
                "spec.ports[1].prot".into()
            ]))
        );
    }
}
