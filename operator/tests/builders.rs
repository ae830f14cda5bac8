//! The pure tenancy functions: what CRD validation cannot catch, the quota formula, groups.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use novads_operator::TenancySettings;
use novads_operator::municipality::build::{self as tenancy, SpecProblem};

fn talsi() -> novads_crds::Municipality {
    let mut municipality: novads_crds::Municipality = serde_saphyr::from_str(
        "apiVersion: novads.io/v1alpha1\nkind: Municipality\nmetadata: {name: talsi, uid: uid-talsi}\n\
         spec: {code: talsi, displayName: Talsi, realm: talsi, adminGroups: [it-admins, it-admins],\n\
         quotas: {cpu: 16, memory: 64Gi, storage: 2Ti, maxVirtualServers: 10}}\n",
    )
    .expect("fixture");
    municipality.metadata.generation = Some(1);
    municipality
}

#[test]
fn quota_adds_launcher_overhead_per_server_and_helper_headroom() {
    let plan = tenancy::plan_quota(&talsi()).expect("valid quota");
    // 64Gi + 10 × 400Mi + 1Gi
    assert_eq!(plan.hard_memory().to_string(), "70560Mi");
    // 16 + 10 × 100m + 1
    assert_eq!(plan.hard_cpu().to_cpu_string(), "18");
}

#[test]
fn malformed_quotas_and_ranges_are_all_reported_with_reasons() {
    let mut municipality = talsi();
    municipality.spec.quotas.memory.0 = "64GB".into();
    municipality.spec.allowed_network_ranges = vec![
        "10.20.0.1/16".into(),
        "0.0.0.0/0".into(),
        "10.0.0.0/33".into(),
        "10.30.0.0/16".into(),
    ];
    let problems = tenancy::plan_tenancy(&municipality, &TenancySettings::default())
        .expect_err("invalid spec");
    let reasons: Vec<&str> = problems.iter().map(SpecProblem::reason).collect();
    assert_eq!(
        reasons,
        [
            "InvalidQuota",
            "InvalidNetworkRange",
            "InvalidNetworkRange",
            "InvalidNetworkRange"
        ]
    );
    let message = tenancy::describe_problems(&problems);
    assert!(
        message.contains("spec.quotas.memory: `64GB` is not a quantity"),
        "{message}"
    );
    assert!(message.contains("did you mean 10.20.0.0/16?"), "{message}");
    assert!(message.contains("whole internet"), "{message}");
}

#[test]
fn groups_are_qualified_with_realm_and_prefix_and_deduplicated() {
    let settings = TenancySettings {
        group_prefix: "oidc:".into(),
    };
    let tenancy = tenancy::plan_tenancy(&talsi(), &settings).expect("valid");
    let admins = &tenancy.role_bindings[0];
    assert_eq!(admins.role_ref.name, tenancy::ADMIN_CLUSTER_ROLE);
    let subjects: Vec<(&str, &str)> = admins
        .subjects
        .iter()
        .flatten()
        .map(|s| (s.kind.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(subjects, [("Group", "oidc:talsi:it-admins")]);
    let viewers = &tenancy.role_bindings[1];
    assert_eq!(viewers.role_ref.name, tenancy::VIEWER_CLUSTER_ROLE);
    assert_eq!(
        viewers.subjects.as_deref(),
        Some(&[][..]),
        "no viewers: empty subjects"
    );
    let officers = &tenancy.role_bindings[2];
    assert_eq!(
        officers.metadata.name.as_deref(),
        Some(tenancy::SECURITY_OFFICER_ROLE_BINDING_NAME)
    );
    assert_eq!(
        officers.subjects.as_deref(),
        Some(&[][..]),
        "no security officers: empty subjects"
    );
}

#[test]
fn security_officers_get_their_own_binding_and_read_the_municipality() {
    let mut municipality = talsi();
    municipality.spec.security_officer_groups = vec!["drosiba".into(), "drosiba".into()];
    let tenancy = tenancy::plan_tenancy(&municipality, &TenancySettings::default()).expect("valid");
    let officers = tenancy
        .role_bindings
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some(tenancy::SECURITY_OFFICER_ROLE_BINDING_NAME))
        .expect("officer binding");
    assert_eq!(
        officers.role_ref.name,
        tenancy::SECURITY_OFFICER_CLUSTER_ROLE
    );
    let names: Vec<&str> = officers
        .subjects
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["talsi:drosiba"]);
    // They also read their Municipality (its status.compliance) and the images.
    let readers: Vec<&str> = tenancy
        .reader_binding
        .subjects
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert!(readers.contains(&"talsi:drosiba"), "{readers:?}");
    // Officers are nobody's admins: the admin binding does not name them.
    assert!(
        tenancy.role_bindings[0]
            .subjects
            .iter()
            .flatten()
            .all(|s| s.name != "talsi:drosiba")
    );
}

#[test]
fn every_child_is_owned_by_the_municipality_as_controller() {
    let tenancy = tenancy::plan_tenancy(&talsi(), &TenancySettings::default()).expect("valid");
    for object in tenancy.to_values().expect("serialise") {
        let owners: Vec<OwnerReference> =
            serde_json::from_value(object["metadata"]["ownerReferences"].clone()).expect("owners");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "uid-talsi");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(
            object["metadata"]["labels"]["novads.io/municipality"],
            "talsi"
        );
    }
    let mut no_uid = talsi();
    no_uid.metadata.uid = None;
    assert_eq!(
        tenancy::plan_tenancy(&no_uid, &TenancySettings::default()).map(|_| ()),
        Err(vec![SpecProblem::IncompleteObject { missing: "uid" }])
    );
}

#[test]
fn a_namespace_of_another_owner_is_a_code_conflict() {
    let municipality = talsi();
    let owned_by = |uid: &str| Namespace {
        metadata: ObjectMeta {
            name: Some("muni-talsi".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "novads.io/v1alpha1".into(),
                kind: "Municipality".into(),
                name: "talsi-old".into(),
                uid: uid.into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    assert_eq!(tenancy::namespace_conflict(&municipality, None), None);
    assert_eq!(
        tenancy::namespace_conflict(&municipality, Some(&owned_by("uid-talsi"))),
        None
    );
    let conflict = tenancy::namespace_conflict(&municipality, Some(&owned_by("uid-other")));
    assert_eq!(
        conflict.as_ref().map(SpecProblem::reason),
        Some("CodeConflict")
    );
    assert!(conflict.is_some_and(|c| c.to_string().contains("Municipality talsi-old")));
    let by_hand = Namespace {
        metadata: ObjectMeta {
            name: Some("muni-talsi".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    assert!(tenancy::namespace_conflict(&municipality, Some(&by_hand)).is_some());
}
