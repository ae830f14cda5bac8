//! Every input of a CEL validation rule is bounded: a real API server estimates a rule's cost
//! from the `maxLength` of the strings and the `maxItems` of the lists it reads, and refuses a
//! CRD (or a costly object) whose rules have no bound to estimate from.
//!
//! Conservative: every string and list in the subtree of a node that carries
//! `x-kubernetes-validations` must be bounded, whether or not the rule reads it.

use serde_json::{Value, json};

/// The generated schema of every CRD, by kind.
fn schemas() -> Vec<(String, Value)> {
    novads_crds::crds()
        .into_iter()
        .flat_map(|crd| {
            let kind = crd.spec.names.kind.clone();
            crd.spec.versions.into_iter().map(move |version| {
                let schema = version
                    .schema
                    .and_then(|s| s.open_api_v3_schema)
                    .expect("every version has an openAPIV3Schema");
                (
                    kind.clone(),
                    serde_json::to_value(schema).expect("schema serialises"),
                )
            })
        })
        .collect()
}

/// The unbounded strings and lists in the subtree of `node`.
fn unbounded(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        return;
    };
    let is_string = object.get("type") == Some(&json!("string"))
        || object.get("x-kubernetes-int-or-string") == Some(&json!(true));
    // An enum bounds a string as well as a maxLength does: the API server's cost estimate
    // takes its longest value.
    if is_string && !object.contains_key("maxLength") && !object.contains_key("enum") {
        out.push(format!("{path}: string without maxLength"));
    }
    if object.get("type") == Some(&json!("array")) && !object.contains_key("maxItems") {
        out.push(format!("{path}: list without maxItems"));
    }
    if object
        .get("additionalProperties")
        .is_some_and(Value::is_object)
        && !object.contains_key("maxProperties")
    {
        out.push(format!("{path}: map without maxProperties"));
    }
    for (name, child) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        unbounded(child, &format!("{path}.{name}"), out);
    }
    if let Some(items) = object.get("items") {
        unbounded(items, &format!("{path}[]"), out);
    }
    if let Some(values) = object.get("additionalProperties") {
        unbounded(values, &format!("{path}{{}}"), out);
    }
}

/// Every node carrying CEL rules, with its path.
fn ruled_nodes<'a>(node: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    let Some(object) = node.as_object() else {
        return;
    };
    if object
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|rules| !rules.is_empty())
    {
        out.push((path.to_string(), node));
    }
    for (name, child) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        ruled_nodes(child, &format!("{path}.{name}"), out);
    }
    if let Some(items) = object.get("items") {
        ruled_nodes(items, &format!("{path}[]"), out);
    }
    if let Some(values) = object.get("additionalProperties") {
        ruled_nodes(values, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_input_of_a_cel_rule_is_bounded() {
    let mut violations = Vec::new();
    let mut rules = 0;
    for (kind, schema) in schemas() {
        let mut nodes = Vec::new();
        ruled_nodes(&schema, &kind, &mut nodes);
        rules += nodes.len();
        for (path, node) in nodes {
            unbounded(node, &path, &mut violations);
        }
    }
    assert!(
        rules >= 10,
        "the CRDs carry CEL rules ({rules} nodes found)"
    );
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "inputs of CEL rules without a bound:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_walk_finds_an_unbounded_rule_input() {
    let schema = json!({
        "type": "object",
        "x-kubernetes-validations": [{ "rule": "self.size() > 0" }],
        "properties": {
            "quota": { "x-kubernetes-int-or-string": true },
            "names": { "type": "array", "maxItems": 4, "items": { "type": "string" } },
            "code": { "type": "string", "maxLength": 40 },
            "mode": { "type": "string", "enum": ["A", "B"] }
        }
    });
    let mut nodes = Vec::new();
    ruled_nodes(&schema, "X", &mut nodes);
    let mut violations = Vec::new();
    for (path, node) in nodes {
        unbounded(node, &path, &mut violations);
    }
    violations.sort();
    assert_eq!(
        violations,
        [
            "X.names[]: string without maxLength",
            "X.quota: string without maxLength",
        ]
    );
}

#[test]
fn a_quantity_longer_than_its_bound_is_refused_before_any_rule_runs() {
    let (_, schema) = schemas()
        .into_iter()
        .find(|(kind, _)| kind == "VirtualServer")
        .expect("VirtualServer CRD");
    let memory = &schema["properties"]["spec"]["properties"]["memory"];
    assert_eq!(memory["maxLength"], json!(novads_crds::QUANTITY_MAX_LENGTH));
    assert!(jsonschema::is_valid(memory, &json!("4Gi")));
    assert!(jsonschema::is_valid(memory, &json!(4_294_967_296_u64)));
    let long = format!("{}Gi", "1".repeat(63));
    assert!(!jsonschema::is_valid(memory, &json!(long)));
}
