//! What a client writes about a virtual server, checked before anything reaches the cluster
//! (with the checks every document gets, [`crate::admin::document`]): the server's name, and
//! that the body speaks of the server and municipality the path names. Pure: the handlers in
//! [`super`] read and apply, this module decides what would be applied.

use std::sync::OnceLock;

use novads_crds::{RunStrategy, VirtualServer, VirtualServerSpec};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::admin::document::{self, BadDocument};

/// A server as a client writes it: the body of a create (`POST`) and a replace (`PUT`); the
/// body of a `PATCH` too, where `spec` is a JSON merge patch (RFC 7386) of the current spec.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerDocument {
    /// The server's name, a DNS label. Required to create; elsewhere, when given, it must be
    /// the name in the path.
    #[serde(default)]
    pub name: Option<String>,
    /// The municipality's code; when given, it must be the code in the path.
    #[serde(default)]
    pub municipality: Option<String>,
    /// The VirtualServer's `spec` (docs/operator.md), e.g.
    /// `{"image": "debian-12", "cpu": 2, "memory": "4Gi"}`.
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// Server names are DNS labels: they name the VirtualMachine and its Service.
pub fn check_name(name: &str) -> Result<(), BadDocument> {
    document::check_label("server", name)
}

/// Reads a body: strict JSON, no unknown top-level field, each field of its type.
pub fn parse(body: &[u8]) -> Result<ServerDocument, BadDocument> {
    document::parse("server", body)
}

/// The server a document speaks of, after checking it against the path: `code` always, and
/// `name` when the path names the server (everything but a create).
pub fn target(
    document: &ServerDocument,
    code: &str,
    path_name: Option<&str>,
) -> Result<String, BadDocument> {
    if let Some(municipality) = &document.municipality
        && municipality != code
    {
        return Err(BadDocument::Mismatch {
            what: "municipality",
            body: municipality.clone(),
            path: code.to_owned(),
        });
    }
    let name = match (&document.name, path_name) {
        (Some(body), Some(path)) if body != path => {
            return Err(BadDocument::Mismatch {
                what: "server",
                body: body.clone(),
                path: path.to_owned(),
            });
        }
        (_, Some(path)) => path.to_owned(),
        (Some(body), None) => body.clone(),
        (None, None) => return Err(BadDocument::Missing("server", "name")),
    };
    check_name(&name)?;
    Ok(name)
}

/// A spec as written, checked: every field known to the VirtualServer's schema (the API server
/// would silently drop the others) and of its type.
pub fn spec(written: &Value) -> Result<VirtualServerSpec, BadDocument> {
    document::spec(written, spec_schema())
}

/// `current` with the merge patch `patch` applied (RFC 7386), checked as [`spec`].
pub fn patched(
    current: &VirtualServerSpec,
    patch: &Value,
) -> Result<VirtualServerSpec, BadDocument> {
    document::patched(current, patch, spec_schema())
}

/// The spec schema of the VirtualServer CRD (crds/src/virtual_server.rs), read once.
fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(document::spec_schema::<VirtualServer>)
}

/// A power action on a server. Power is switched in the VirtualServer alone
/// (docs/operator.md): `start` and `stop` set `runStrategy`, `restart` sets a new restart token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Start,
    Stop,
    Restart,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }

    /// `spec` after the action; `token` is the new restart token (a fresh value each time).
    pub fn applied_to(self, mut spec: VirtualServerSpec, token: String) -> VirtualServerSpec {
        match self {
            Self::Start => spec.run_strategy = RunStrategy::Running,
            Self::Stop => spec.run_strategy = RunStrategy::Halted,
            Self::Restart => spec.restart = Some(token),
        }
        spec
    }
}

/// The object the admin API applies: the whole spec, so that what `novads-api` owns is always
/// the server as last written; `resource_version`, when given, makes the API server refuse the
/// write if the server changed since (409).
pub fn applied(
    namespace: &str,
    name: &str,
    spec: VirtualServerSpec,
    resource_version: Option<String>,
) -> VirtualServer {
    let mut server = VirtualServer::new(name, spec);
    server.metadata.namespace = Some(namespace.to_owned());
    server.metadata.resource_version = resource_version;
    server
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn web() -> Value {
        json!({ "image": "debian-12", "cpu": 2, "memory": "4Gi" })
    }

    #[test]
    fn the_body_must_speak_of_the_path() {
        let document = |name: Option<&str>, municipality: Option<&str>| ServerDocument {
            name: name.map(str::to_owned),
            municipality: municipality.map(str::to_owned),
            spec: web(),
        };
        assert_eq!(
            target(&document(Some("web"), None), "talsi", None),
            Ok("web".into())
        );
        assert_eq!(
            target(&document(None, Some("talsi")), "talsi", Some("web")),
            Ok("web".into())
        );
        assert_eq!(
            target(&document(None, None), "talsi", None),
            Err(BadDocument::Missing("server", "name"))
        );
        assert!(matches!(
            target(&document(Some("db"), None), "talsi", Some("web")),
            Err(BadDocument::Mismatch { what: "server", .. })
        ));
        assert!(matches!(
            target(&document(Some("web"), Some("ventspils")), "talsi", None),
            Err(BadDocument::Mismatch {
                what: "municipality",
                ..
            })
        ));
        assert_eq!(
            target(&document(Some("Web"), None), "talsi", None),
            Err(BadDocument::Name("server", "Web".into()))
        );
    }

    #[test]
    fn a_spec_has_only_fields_of_the_virtual_server_schema() {
        let checked = spec(&web()).expect("valid");
        assert_eq!(checked.cpu, 2);
        assert_eq!(checked.run_strategy, RunStrategy::Running);

        let mut typo = web();
        typo["cpus"] = json!(4);
        typo["expose"] = json!({ "ports": [{ "port": 443, "protocl": "TCP" }] });
        assert_eq!(
            spec(&typo),
            Err(BadDocument::UnknownFields(vec![
                "spec.cpus".into(),
                "spec.expose.ports[0].protocl".into()
            ]))
        );
        let mut wrong = web();
        wrong["cpu"] = json!("two");
        let refusal = spec(&wrong).expect_err("wrong type").to_string();
        assert!(refusal.starts_with("spec.cpu: invalid type"), "{refusal}");
    }

    #[test]
    fn a_patch_merges_into_the_current_spec_and_is_checked_as_a_whole() {
        let current = spec(&web()).expect("valid");
        let patched =
            patched(&current, &json!({ "cpu": 4, "runStrategy": "Halted" })).expect("merges");
        assert_eq!(
            (patched.cpu, patched.run_strategy),
            (4, RunStrategy::Halted)
        );
        assert_eq!(patched.image, "debian-12");
        // `null` removes a field; a required one cannot go.
        assert!(patched_err(&current, json!({ "image": null })).contains("missing field `image`"));
        assert!(patched_err(&current, json!({ "colour": "red" })).contains("spec.colour"));
        assert!(patched_err(&current, json!([1])).contains("JSON object"));
    }

    fn patched_err(current: &VirtualServerSpec, patch: Value) -> String {
        patched(current, &patch).expect_err("refused").to_string()
    }

    #[test]
    fn power_actions_switch_run_strategy_or_set_a_new_restart_token() {
        let current = spec(&web()).expect("valid");
        let stopped = PowerAction::Stop.applied_to(current.clone(), "t1".into());
        assert_eq!(stopped.run_strategy, RunStrategy::Halted);
        let started = PowerAction::Start.applied_to(stopped, "t2".into());
        assert_eq!(started.run_strategy, RunStrategy::Running);
        let restarted = PowerAction::Restart.applied_to(started, "t3".into());
        assert_eq!(restarted.restart.as_deref(), Some("t3"));
        assert_eq!(restarted.run_strategy, RunStrategy::Running);
    }

    #[test]
    fn the_applied_object_names_its_namespace_and_precondition() {
        let server = applied(
            "muni-talsi",
            "web",
            spec(&web()).expect("valid"),
            Some("7".into()),
        );
        let json = serde_json::to_value(&server).expect("json");
        assert_eq!(json["apiVersion"], "novads.io/v1alpha1");
        assert_eq!(json["kind"], "VirtualServer");
        assert_eq!(json["metadata"]["namespace"], "muni-talsi");
        assert_eq!(json["metadata"]["resourceVersion"], "7");
        assert!(json.get("status").is_none_or(Value::is_null));
    }
}
