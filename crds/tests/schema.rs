//! Structural-schema checks (apiextensions.k8s.io/v1 rules the API server enforces on CRDs),
//! printer-column paths, and the CEL rules evaluated locally with kube-cel.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every version has an openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serialises")
}

fn crd(kind: &str) -> CustomResourceDefinition {
    novads_crds::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("CRD exists")
}

/// Collects every violation of the structural-schema rules under `node`.
fn structural_violations(node: &Value, path: &str, in_logic: bool, out: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    let int_or_string = object.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if in_logic {
        for forbidden in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
        ] {
            if object.contains_key(forbidden) {
                out.push(format!(
                    "{path}: `{forbidden}` inside anyOf/allOf/oneOf/not"
                ));
            }
        }
    } else if !int_or_string && !preserve {
        match object.get("type").and_then(Value::as_str) {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            other => out.push(format!("{path}: missing or invalid type {other:?}")),
        }
    }
    if int_or_string && object.contains_key("type") {
        out.push(format!("{path}: int-or-string node must not set type"));
    }
    if object.contains_key("properties") && object.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties together with additionalProperties"
        ));
    }
    for forbidden in [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "dependencies",
        "id",
    ] {
        if object.contains_key(forbidden) {
            out.push(format!("{path}: `{forbidden}` is not allowed"));
        }
    }
    if object.get("type").and_then(Value::as_str) == Some("array") && !object.contains_key("items")
    {
        out.push(format!("{path}: array without items"));
    }
    if let Some(items) = object.get("items") {
        if items.is_array() {
            out.push(format!("{path}: items must be one schema, not a list"));
        } else {
            structural_violations(items, &format!("{path}[]"), in_logic, out);
        }
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            structural_violations(property, &format!("{path}.{name}"), in_logic, out);
        }
    }
    if let Some(additional) = object.get("additionalProperties").filter(|v| v.is_object()) {
        structural_violations(additional, &format!("{path}.*"), in_logic, out);
    }
    for logic in ["anyOf", "allOf", "oneOf"] {
        for (index, branch) in object
            .get(logic)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural_violations(branch, &format!("{path}.{logic}[{index}]"), true, out);
        }
    }
    if let Some(not) = object.get("not") {
        structural_violations(not, &format!("{path}.not"), true, out);
    }
    if let Some(keys) = object
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
    {
        let required = object
            .get("items")
            .and_then(|items| items.get("required"))
            .and_then(Value::as_array);
        for key in keys {
            if !required.is_some_and(|required| required.contains(key)) {
                out.push(format!("{path}: list-map key {key} is not required"));
            }
        }
    }
}

#[test]
fn every_crd_has_a_structural_schema() {
    for crd in novads_crds::crds() {
        let schema = schema_of(&crd);
        let mut violations = Vec::new();
        structural_violations(&schema, &crd.spec.names.kind, false, &mut violations);
        assert_eq!(schema["type"], "object", "root must be an object");
        // Only metadata.name / generateName may be constrained at the root.
        if let Some(metadata) = schema["properties"].get("metadata") {
            assert!(
                metadata.get("properties").is_none(),
                "metadata must not be restricted"
            );
        }
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

#[test]
fn names_scope_and_subresources_follow_the_contract() {
    let municipality = crd("Municipality");
    assert_eq!(municipality.spec.scope, "Cluster");
    assert_eq!(municipality.spec.names.plural, "municipalities");
    assert_eq!(
        municipality.spec.names.short_names.as_deref(),
        Some(&["muni".to_string()][..])
    );
    let server_image = crd("ServerImage");
    assert_eq!(server_image.spec.scope, "Cluster");
    let virtual_server = crd("VirtualServer");
    assert_eq!(virtual_server.spec.scope, "Namespaced");
    assert_eq!(
        virtual_server.spec.names.short_names.as_deref(),
        Some(&["vs".to_string()][..])
    );
    for crd in [&municipality, &virtual_server] {
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
    for crd in novads_crds::crds() {
        assert_eq!(crd.spec.group, "novads.io");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        assert!(crd.spec.versions[0].served && crd.spec.versions[0].storage);
    }
}

/// Resolves a printer column's JSONPath (`.a.b[?(...)].c`) in the schema.
fn resolve<'a>(schema: &'a Value, json_path: &str) -> Option<&'a Value> {
    let mut node = schema;
    for segment in json_path.trim_start_matches('.').split('.') {
        let (name, indexed) = match segment.split_once('[') {
            Some((name, _)) => (name, true),
            None => (segment, false),
        };
        if name.is_empty() {
            continue;
        }
        if name == "metadata" {
            return Some(node); // metadata is the API server's, not in the schema
        }
        node = node.get("properties")?.get(name)?;
        if indexed {
            node = node.get("items")?;
        }
    }
    Some(node)
}

#[test]
fn printer_columns_point_at_fields_that_exist() {
    for crd in novads_crds::crds() {
        let schema = schema_of(&crd);
        for column in crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
        {
            // A filter expression contains dots of its own; resolve only the path around it.
            let path = column.json_path.replace("[?(@.type==\"Ready\")]", "[]");
            assert!(
                resolve(&schema, &path).is_some(),
                "{}: printer column {} points at missing {}",
                crd.spec.names.kind,
                column.name,
                column.json_path
            );
        }
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    fn undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
        for (name, property) in node
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let here = format!("{path}.{name}");
            if property.get("description").is_none() && name != "status" {
                out.push(here.clone());
            }
            undocumented(property, &here, out);
            if let Some(items) = property.get("items") {
                undocumented(items, &format!("{here}[]"), out);
            }
        }
    }
    for crd in novads_crds::crds() {
        let mut missing = Vec::new();
        let schema = schema_of(&crd);
        undocumented(&schema["properties"]["spec"], "spec", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: undocumented {missing:?}",
            crd.spec.names.kind
        );
    }
}

// --- CEL rules, evaluated as the API server would -----------------------------------------

fn talsi() -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "Municipality",
        "metadata": { "name": "talsi" },
        "spec": {
            "code": "talsi",
            "displayName": "Talsu novads",
            "realm": "talsi",
            "adminGroups": ["it-admins"],
            "quotas": { "cpu": 16, "memory": "64Gi", "storage": "2Ti", "maxVirtualServers": 10 }
        }
    })
}

fn cel_errors(kind: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema_of(&crd(kind));
    match kube_cel::Validator::new().validate(&schema, object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .as_slice()
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

#[test]
fn a_valid_municipality_passes_every_rule() {
    assert_eq!(
        cel_errors("Municipality", &talsi(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        cel_errors("Municipality", &talsi(), Some(&talsi())),
        Vec::<String>::new()
    );
}

#[test]
fn code_and_realm_are_immutable() {
    let mut renamed = talsi();
    renamed["spec"]["code"] = json!("talsi2");
    renamed["spec"]["realm"] = json!("other");
    let errors = cel_errors("Municipality", &renamed, Some(&talsi()));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("code is immutable")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("realm is immutable")),
        "{errors:?}"
    );
}

#[test]
fn negative_or_malformed_quotas_are_refused() {
    for (field, value) in [
        ("cpu", json!(-1)),
        ("memory", json!("-1Gi")),
        ("storage", json!("lots")),
    ] {
        let mut municipality = talsi();
        municipality["spec"]["quotas"][field] = value.clone();
        let errors = cel_errors("Municipality", &municipality, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("{field} must be a non-negative quantity"))),
            "{field}={value}: {errors:?}"
        );
    }
    let mut zero = talsi();
    zero["spec"]["quotas"]["cpu"] = json!("0");
    assert_eq!(
        cel_errors("Municipality", &zero, None),
        Vec::<String>::new()
    );
}

#[test]
fn a_server_image_has_exactly_one_source() {
    let image = |source: Value| {
        json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
            "metadata": { "name": "debian-12" },
            "spec": {
                "source": source, "osFamily": "Linux", "version": "12",
                "supportEnd": "2028-06-30", "lastPatched": "2025-01-15",
                "minDiskSize": "20Gi", "approved": true
            }
        })
    };
    let one = image(json!({ "http": "https://images.example/debian-12.qcow2" }));
    assert_eq!(cel_errors("ServerImage", &one, None), Vec::<String>::new());
    let two = image(json!({
        "http": "https://images.example/debian-12.qcow2",
        "registry": "docker://quay.io/containerdisks/debian:12"
    }));
    assert!(
        cel_errors("ServerImage", &two, None)
            .iter()
            .any(|e| e.contains("exactly one"))
    );
    let none = image(json!({}));
    assert!(
        cel_errors("ServerImage", &none, None)
            .iter()
            .any(|e| e.contains("exactly one"))
    );
}

fn server(spec: Value) -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": { "name": "web", "namespace": "muni-talsi" },
        "spec": spec
    })
}

#[test]
fn a_virtual_server_within_bounds_passes() {
    let full = server(json!({
        "image": "debian-12", "cpu": 2, "memory": "4Gi",
        "disks": { "systemSize": "40Gi", "data": [ { "name": "data", "size": "100Gi" } ] }
    }));
    assert_eq!(
        cel_errors("VirtualServer", &full, None),
        Vec::<String>::new()
    );
    let minimal = server(json!({ "image": "debian-12", "cpu": 1, "memory": "256Mi" }));
    assert_eq!(
        cel_errors("VirtualServer", &minimal, None),
        Vec::<String>::new()
    );
}

#[test]
fn absurd_memory_and_disk_sizes_are_refused() {
    for memory in [
        json!("0"),
        json!("-4Gi"),
        json!("100Mi"),
        json!("2Ti"),
        json!("lots"),
    ] {
        let errors = cel_errors(
            "VirtualServer",
            &server(json!({ "image": "debian-12", "cpu": 2, "memory": memory })),
            None,
        );
        assert!(
            errors.iter().any(|e| e.contains("between 256Mi and 1Ti")),
            "memory {memory}: {errors:?}"
        );
    }
    for size in [
        json!("0"),
        json!("-1Gi"),
        json!("512Mi"),
        json!("100Ti"),
        json!("big"),
    ] {
        let errors = cel_errors(
            "VirtualServer",
            &server(json!({
                "image": "debian-12", "cpu": 2, "memory": "4Gi",
                "disks": { "systemSize": size, "data": [ { "name": "data", "size": size } ] }
            })),
            None,
        );
        assert!(
            errors.iter().any(|e| e.contains("systemSize must be"))
                && errors
                    .iter()
                    .any(|e| e.contains("size must be a quantity between 1Gi")),
            "disk size {size}: {errors:?}"
        );
    }
}

// --- Types --------------------------------------------------------------------------------

#[test]
fn defaults_fill_in_what_an_admin_leaves_out() {
    let municipality: novads_crds::Municipality =
        serde_json::from_value(talsi()).expect("fixture deserialises");
    assert_eq!(
        municipality.spec.deletion_policy,
        novads_crds::DeletionPolicy::Retain
    );
    assert_eq!(
        municipality.spec.security_profile,
        novads_crds::SecurityProfile::Standard
    );
    assert!(municipality.spec.viewer_groups.is_empty());
    assert!(municipality.spec.security_officer_groups.is_empty());
    assert_eq!(municipality.namespace_name(), "muni-talsi");
    let schema = schema_of(&crd("Municipality"));
    assert_eq!(
        schema["properties"]["spec"]["properties"]["deletionPolicy"]["default"],
        "Retain"
    );
}

// --- Examples -----------------------------------------------------------------------------

/// The manifests in `examples/` are what the README walks through: each must deserialise into
/// its Rust type and pass every CEL rule of its CRD.
#[test]
fn the_examples_are_valid_resources() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("example readable");
        let object: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let kind = object["kind"].as_str().expect("kind").to_string();
        match kind.as_str() {
            "Municipality" => {
                serde_json::from_value::<novads_crds::Municipality>(object.clone())
                    .map(drop)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            }
            "ServerImage" => {
                serde_json::from_value::<novads_crds::ServerImage>(object.clone())
                    .map(drop)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            }
            "VirtualServer" => {
                serde_json::from_value::<novads_crds::VirtualServer>(object.clone())
                    .map(drop)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            }
            other => panic!("{}: unexpected kind {other}", path.display()),
        }
        assert_eq!(
            cel_errors(&kind, &object, None),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        checked.push(kind);
    }
    checked.sort();
    assert_eq!(checked, ["Municipality", "ServerImage", "VirtualServer"]);
}

// --- OpenAPI validation -------------------------------------------------------------------

/// What the API server's OpenAPI validation (types, patterns, ranges, enums) says about an
/// object, one line per violation.
fn openapi_errors(kind: &str, object: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema_of(&crd(kind))).expect("schema compiles");
    validator
        .iter_errors(object)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

fn web_server() -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/virtualserver-web.yaml"),
    )
    .expect("example readable");
    serde_saphyr::from_str(&text).expect("example parses")
}

#[test]
fn the_full_example_server_passes_openapi_validation() {
    assert_eq!(
        openapi_errors("VirtualServer", &web_server()),
        Vec::<String>::new()
    );
}

#[test]
fn garbage_in_virtual_server_fields_is_refused_with_the_field_named() {
    let cases: [(&str, Value, &str); 12] = [
        ("/spec/cpu", json!(-2), "/spec/cpu"),
        ("/spec/cpu", json!(4096), "/spec/cpu"),
        ("/spec/image", json!("Debian 12; rm -rf /"), "/spec/image"),
        ("/spec/runStrategy", json!("Sometimes"), "/spec/runStrategy"),
        (
            "/spec/expose/ports/0/allowedSources/0",
            json!("ten.twenty/16"),
            "/spec/expose/ports/0/allowedSources/0",
        ),
        (
            "/spec/expose/ports/0/port",
            json!(70000),
            "/spec/expose/ports/0/port",
        ),
        (
            "/spec/expose/ports/0/protocol",
            json!("ICMP"),
            "/spec/expose/ports/0/protocol",
        ),
        (
            "/spec/backup/schedule",
            json!("every night"),
            "/spec/backup/schedule",
        ),
        ("/spec/backup/retention", json!(0), "/spec/backup/retention"),
        (
            "/spec/ssh/authorizedKeys/0",
            json!("not a key\nssh-rsa AAAA injected"),
            "/spec/ssh/authorizedKeys/0",
        ),
        (
            "/spec/maintenanceWindow/start",
            json!("25:00"),
            "/spec/maintenanceWindow/start",
        ),
        (
            "/spec/disks/data/0/name",
            json!("Data Disk"),
            "/spec/disks/data/0/name",
        ),
    ];
    for (pointer, value, expected_path) in cases {
        let mut server = web_server();
        *server
            .pointer_mut(pointer)
            .expect("field exists in the example") = value.clone();
        let errors = openapi_errors("VirtualServer", &server);
        assert!(
            errors.iter().any(|e| e.starts_with(expected_path)),
            "{pointer} = {value}: {errors:?}"
        );
    }
    let mut nine_disks = web_server();
    nine_disks["spec"]["disks"]["data"] = json!(
        (0..9)
            .map(|i| json!({"name": format!("d{i}"), "size": "1Gi"}))
            .collect::<Vec<_>>()
    );
    assert!(!openapi_errors("VirtualServer", &nine_disks).is_empty());
}

#[test]
fn disks_grow_but_never_shrink() {
    let with_sizes = |system: &str, data: &str| {
        server(json!({
            "image": "debian-12", "cpu": 2, "memory": "4Gi",
            "disks": { "systemSize": system, "data": [ { "name": "data", "size": data } ] }
        }))
    };
    let old = with_sizes("40Gi", "100Gi");
    assert_eq!(
        cel_errors("VirtualServer", &with_sizes("80Gi", "200Gi"), Some(&old)),
        Vec::<String>::new()
    );
    let errors = cel_errors("VirtualServer", &with_sizes("20Gi", "50Gi"), Some(&old));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("systemSize can grow but not shrink"))
            && errors
                .iter()
                .any(|e| e.contains("size can grow but not shrink")),
        "{errors:?}"
    );
}

// --- SecurityExemption --------------------------------------------------------------------

fn exemption() -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "SecurityExemption",
        "metadata": { "name": "legacy-web", "namespace": "muni-talsi" },
        "spec": {
            "check": "image.in-support",
            "subjects": ["web"],
            "reason": "the records system needs Debian 10 until its migration in May 2027",
            "approver": "anna@talsi",
            "expires": "2027-06-30T00:00:00Z"
        }
    })
}

#[test]
fn a_security_exemption_is_namespaced_and_bounded() {
    let crd = crd("SecurityExemption");
    assert_eq!(crd.spec.scope, "Namespaced");
    let valid = exemption();
    assert_eq!(
        openapi_errors("SecurityExemption", &valid),
        Vec::<String>::new()
    );
    assert_eq!(
        cel_errors("SecurityExemption", &valid, Some(&valid)),
        Vec::<String>::new()
    );
    serde_json::from_value::<novads_crds::SecurityExemption>(valid.clone()).expect("typed");

    for missing in ["reason", "expires", "approver", "check"] {
        let mut object = exemption();
        object["spec"]
            .as_object_mut()
            .expect("spec")
            .remove(missing);
        assert!(
            !openapi_errors("SecurityExemption", &object).is_empty(),
            "{missing} is required"
        );
    }
    let mut object = exemption();
    object["spec"]["reason"] = json!("because");
    assert!(
        !openapi_errors("SecurityExemption", &object).is_empty(),
        "a reason says why"
    );
    object["spec"]["reason"] = json!("x".repeat(1001));
    assert!(!openapi_errors("SecurityExemption", &object).is_empty());
    let mut object = exemption();
    object["spec"]["subjects"] = json!(vec!["web"; 65]);
    assert!(!openapi_errors("SecurityExemption", &object).is_empty());

    let mut changed = exemption();
    changed["spec"]["check"] = json!("image.patched");
    assert_eq!(
        cel_errors("SecurityExemption", &changed, Some(&valid)),
        ["spec.check: check is immutable: create another exemption for another check"]
    );
}

#[test]
fn every_string_and_list_of_a_security_exemption_is_bounded() {
    let schema = schema_of(&crd("SecurityExemption"));
    let spec = &schema["properties"]["spec"];
    for (name, property) in spec["properties"].as_object().expect("properties") {
        match property["type"].as_str() {
            Some("string") => assert!(property["maxLength"].is_number(), "{name}"),
            Some("array") => {
                assert!(property["maxItems"].is_number(), "{name}");
                assert!(property["items"]["maxLength"].is_number(), "{name}[]");
            }
            other => panic!("{name}: unexpected type {other:?}"),
        }
    }
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in ["check", "reason", "approver", "expires"] {
        assert!(required.contains(&field), "{field} is required");
    }
}
