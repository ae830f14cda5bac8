//! Golden files: every fixture in tests/fixtures/ rendered with the operator's pure functions
//! must equal tests/golden/<same name>. Regenerate with:
//!
//!     NOVADS_BLESS=1 cargo test -p novads-operator --test golden
//!
//! and review the diff: it is exactly what changes on every cluster.

use std::path::Path;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use novads_operator::TenancySettings;
use serde_json::Value;

fn settings_for(fixture: &str) -> TenancySettings {
    if fixture.contains("prefixed") {
        TenancySettings {
            group_prefix: "oidc:".to_string(),
        }
    } else {
        TenancySettings::default()
    }
}

fn fixtures() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut fixtures: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("read fixture"))
        })
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty(), "no fixtures in {}", dir.display());
    fixtures
}

#[test]
fn rendered_fixtures_equal_their_golden_files() {
    let bless = std::env::var_os("NOVADS_BLESS").is_some_and(|value| value == "1");
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut stale = Vec::new();
    for (name, input) in fixtures() {
        let rendered = novads_operator::render_with(&input, &settings_for(&name))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let path = golden_dir.join(&name);
        if bless {
            std::fs::write(&path, &rendered).expect("write golden file");
        } else if std::fs::read_to_string(&path).unwrap_or_default() != rendered {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "rendered output differs from tests/golden for {stale:?}\n\
         regenerate with: NOVADS_BLESS=1 cargo test -p novads-operator --test golden"
    );
}

/// Deserialises into the k8s-openapi type and back; any field the real API type does not
/// have (a typo, a wrong nesting) would be lost and fail the comparison.
fn round_trips_as<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) {
    let typed: T = serde_path_to_error::deserialize(object.clone())
        .unwrap_or_else(|error| panic!("{}: {error}", object["metadata"]["name"]));
    let again = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(
        &again, object,
        "{} does not round-trip",
        object["metadata"]["name"]
    );
}

#[test]
fn every_rendered_object_round_trips_through_k8s_openapi_types() {
    for (name, input) in fixtures() {
        let rendered = novads_operator::render_with(&input, &settings_for(&name)).expect("render");
        let objects: Vec<Value> = serde_saphyr::from_multiple(&rendered).expect("rendered YAML");
        assert!(!objects.is_empty(), "{name}");
        for object in objects.iter().filter(|o| !o.is_null()) {
            match (object["apiVersion"].as_str(), object["kind"].as_str()) {
                (Some("v1"), Some("Namespace")) => round_trips_as::<Namespace>(object),
                (Some("v1"), Some("ResourceQuota")) => round_trips_as::<ResourceQuota>(object),
                (Some("v1"), Some("LimitRange")) => round_trips_as::<LimitRange>(object),
                (Some("networking.k8s.io/v1"), Some("NetworkPolicy")) => {
                    round_trips_as::<NetworkPolicy>(object)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                    round_trips_as::<RoleBinding>(object)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                    round_trips_as::<ClusterRole>(object)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                    round_trips_as::<ClusterRoleBinding>(object)
                }
                (Some("v1"), Some("Secret")) => round_trips_as::<Secret>(object),
                (Some("v1"), Some("Service")) => round_trips_as::<Service>(object),
                // novads' own KubeVirt types; tests/virtual_server_build.rs validates the same
                // builders' output against KubeVirt's published schema.
                (Some("kubevirt.io/v1"), Some("VirtualMachine")) => {
                    round_trips_as::<novads_operator::kubevirt::VirtualMachine>(object)
                }
                other => panic!("{name}: unexpected object {other:?}"),
            }
        }
    }
}
