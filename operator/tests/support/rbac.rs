//! The operator's RBAC as the chart grants it (charts/novads/templates/rbac-operator.yaml):
//! every request the kit answers is checked against it, so a grant the operator needs cannot
//! be forgotten there.

use std::sync::OnceLock;

use http::Method;
use serde_json::Value;

struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

/// The rules of the operator's ClusterRole and of its leader-election Role (which applies in
/// the release namespace only; the kit does not tell namespaces apart for it).
fn operator_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/novads/templates/rbac-operator.yaml"
        );
        let text = std::fs::read_to_string(path).expect("read the chart's rbac-operator.yaml");
        // The Role's namespace is a Helm template, which is not YAML.
        let text = text.replace("{{ .Release.Namespace }}", "release-namespace");
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        let mut kinds = Vec::new();
        let mut rules = Vec::new();
        for document in text.split("\n---\n") {
            let role: Value = serde_saphyr::from_str(document).expect("RBAC YAML");
            kinds.push(role["kind"].as_str().unwrap_or_default().to_string());
            rules.extend(
                role["rules"]
                    .as_array()
                    .expect("rules")
                    .iter()
                    .map(|rule| Rule {
                        groups: strings(&rule["apiGroups"]),
                        resources: strings(&rule["resources"]),
                        verbs: strings(&rule["verbs"]),
                        names: strings(&rule["resourceNames"]),
                    }),
            );
        }
        assert_eq!(kinds, ["ClusterRole", "Role"], "{path}");
        rules
    })
}

/// What a request needs: (group, resource[/subresource], name, verbs).
pub fn authorization(
    method: &Method,
    uri: &str,
    content_type: &str,
) -> (String, String, String, Vec<&'static str>) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", group, _version, rest @ ..] => ((*group).to_string(), rest.to_vec()),
        _ => panic!("not an API path: {uri}"),
    };
    let rest = match rest.as_slice() {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest.to_vec(),
        other => other.to_vec(),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => ((*resource).to_string(), String::new(), false),
        [resource, name] => ((*resource).to_string(), (*name).to_string(), false),
        [resource, name, sub] => (format!("{resource}/{sub}"), (*name).to_string(), true),
        _ => panic!("unexpected API path {uri}"),
    };
    let apply = content_type.contains("apply-patch");
    let verbs = match *method {
        Method::GET if query.contains("watch=true") => vec!["watch"],
        Method::GET if name.is_empty() => vec!["list"],
        Method::GET => vec!["get"],
        Method::POST => vec!["create"],
        Method::PUT => vec!["update"],
        // Server-side apply creates what does not exist yet, which needs `create` too; a
        // subresource (status) is never created by an apply, its object must exist.
        Method::PATCH if apply && !subresource => vec!["patch", "create"],
        Method::PATCH => vec!["patch"],
        Method::DELETE => vec!["delete"],
        _ => panic!("unexpected method {method}"),
    };
    (group, resource, name, verbs)
}

/// Panics when the chart does not grant the operator what the request needs.
pub fn assert_allowed(method: &Method, uri: &str, content_type: &str) {
    let (group, resource, name, verbs) = authorization(method, uri, content_type);
    for verb in verbs {
        let allowed = operator_rules().iter().any(|rule| {
            rule.groups.contains(&group)
                && rule.resources.contains(&resource)
                && rule.verbs.iter().any(|v| v == verb)
                && (rule.names.is_empty() || rule.names.contains(&name))
        });
        assert!(
            allowed,
            "the chart's RBAC does not allow {verb} on {resource} in group {group:?} \
             ({method} {uri})"
        );
    }
}

/// Whether ClusterRole `role` in the chart's rbac-municipality.yaml (the roles bound to a
/// municipality's own admins and viewers) allows `verb` on `resource` in `group`.
pub fn municipality_role_allows(role: &str, group: &str, resource: &str, verb: &str) -> bool {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/novads/templates/rbac-municipality.yaml"
    );
    let text = std::fs::read_to_string(path).expect("read the chart's rbac-municipality.yaml");
    let has = |list: &Value, item: &str| {
        list.as_array()
            .is_some_and(|items| items.iter().any(|v| v.as_str() == Some(item)))
    };
    let mut found = false;
    let mut allowed = false;
    for document in text.split("\n---\n") {
        let cluster_role: Value = serde_saphyr::from_str(document).expect("RBAC YAML");
        if cluster_role["metadata"]["name"].as_str() != Some(role) {
            continue;
        }
        found = true;
        allowed |= cluster_role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                has(&rule["apiGroups"], group)
                    && has(&rule["resources"], resource)
                    && has(&rule["verbs"], verb)
                    && rule["resourceNames"].as_array().is_none_or(Vec::is_empty)
            });
    }
    assert!(found, "no ClusterRole {role} in {path}");
    allowed
}
