use novads_crds::VirtualServerStatus;
use serde_json::{Value, json};

use super::*;

const NAMESPACE: &str = "muni-talsi";

fn today() -> Date {
    Date::constant(2025, 3, 10)
}

fn image_with(changes: Value) -> ServerImage {
    let mut spec = json!({
        "source": {"registry": "docker://quay.io/containerdisks/debian:12"},
        "osFamily": "Linux",
        "version": "12",
        "supportEnd": "2028-06-30",
        "lastPatched": "2025-03-01",
        "minDiskSize": "20Gi",
        "approved": true,
    });
    merge(&mut spec, changes);
    serde_json::from_value(json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "ServerImage",
        "metadata": {"name": "debian-12"},
        "spec": spec,
    }))
    .expect("test image")
}

fn image() -> ServerImage {
    image_with(json!({}))
}

fn municipality_with(changes: Value) -> Municipality {
    let mut spec = json!({
        "code": "talsi",
        "displayName": "Talsu novads",
        "realm": "talsi",
        "quotas": {"cpu": "16", "memory": "64Gi", "storage": "2Ti", "maxVirtualServers": 10},
        "allowedNetworkRanges": ["10.20.0.0/16", "2001:db8:20::/48"],
    });
    merge(&mut spec, changes);
    serde_json::from_value(json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "Municipality",
        "metadata": {"name": "talsi"},
        "spec": spec,
    }))
    .expect("test municipality")
}

fn municipality() -> Municipality {
    municipality_with(json!({}))
}

/// A server named `name`, created `minute` minutes past 09:00 on 2025-03-10.
fn server_with(name: &str, minute: u8, changes: Value) -> VirtualServer {
    let mut spec = json!({"image": "debian-12", "cpu": 2, "memory": "4Gi"});
    merge(&mut spec, changes);
    serde_json::from_value(json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "VirtualServer",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "creationTimestamp": format!("2025-03-10T09:{minute:02}:00Z"),
        },
        "spec": spec,
    }))
    .expect("test server")
}

fn server(changes: Value) -> VirtualServer {
    server_with("web", 30, changes)
}

fn with_phase(mut server: VirtualServer, phase: Phase) -> VirtualServer {
    server.status = Some(VirtualServerStatus {
        phase: Some(phase),
        ..VirtualServerStatus::default()
    });
    server
}

fn merge(base: &mut Value, changes: Value) {
    match (base, changes) {
        (Value::Object(base), Value::Object(changes)) => {
            for (key, value) in changes {
                match base.get_mut(&key) {
                    Some(existing) if value.is_object() => merge(existing, value),
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, changes) => *base = changes,
    }
}

struct Case {
    server: VirtualServer,
    image: Option<ServerImage>,
    municipality: Option<Municipality>,
    siblings: Vec<VirtualServer>,
    vm_exists: bool,
}

impl Case {
    fn new(server: VirtualServer) -> Self {
        Self {
            server,
            image: Some(image()),
            municipality: Some(municipality()),
            siblings: Vec::new(),
            vm_exists: false,
        }
    }

    fn admit(&self) -> Result<Admitted, Vec<Refusal>> {
        admit(&AdmissionInput {
            server: &self.server,
            image: self.image.as_ref(),
            municipality: self.municipality.as_ref(),
            siblings: &self.siblings,
            vm_exists: self.vm_exists,
            today: today(),
        })
    }

    fn refusals(&self) -> Vec<Refusal> {
        match self.admit() {
            Ok(admitted) => panic!("admitted: {admitted:?}"),
            Err(refusals) => refusals,
        }
    }

    /// The refusals as `(reason, message)`, for readable assertions.
    fn refused(&self) -> Vec<(&'static str, String)> {
        self.refusals()
            .into_iter()
            .map(|r| (r.reason, r.message))
            .collect()
    }
}

fn only(case: &Case) -> (&'static str, String) {
    let refused = case.refused();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    refused.into_iter().next().expect("one refusal")
}

#[test]
fn admits_a_valid_server_with_the_images_minimum_disk() {
    let admitted = Case::new(server(json!({}))).admit().expect("admitted");
    assert_eq!(admitted.system_disk_size, Quantity("20Gi".into()));
}

#[test]
fn the_specs_system_disk_size_wins() {
    let case = Case::new(server(json!({"disks": {"systemSize": "40Gi"}})));
    assert_eq!(
        case.admit().map(|a| a.system_disk_size),
        Ok(Quantity("40Gi".into()))
    );
}

#[test]
fn a_full_spec_within_bounds_is_admitted() {
    let case = Case::new(server(json!({
        "cpu": 8,
        "memory": "16Gi",
        "disks": {"systemSize": "40Gi", "data": [
            {"name": "data", "size": "500Gi"},
            {"name": "logs", "size": "100Gi"},
        ]},
        "cloudInit": {"secretRef": {"name": "web-init", "namespace": NAMESPACE}},
        "expose": {"ports": [
            {"port": 443, "allowedSources": ["10.20.0.0/16", "10.20.5.0/24"]},
            {"port": 53, "protocol": "UDP", "allowedSources": ["2001:db8:20:1::/64"]},
        ]},
        "backup": {"schedule": "0 2 * * *", "retention": 14},
        "maintenanceWindow": {"days": ["Sat"], "start": "23:00", "durationMinutes": 180},
    })));
    assert_eq!(
        case.admit().map(|a| a.system_disk_size),
        Ok(Quantity("40Gi".into()))
    );
}

#[test]
fn an_unknown_image_is_refused_before_the_vm_exists() {
    let mut case = Case::new(server(json!({})));
    case.image = None;
    let (reason, message) = only(&case);
    assert_eq!(reason, "ImageNotFound");
    assert!(
        message.contains("ServerImage debian-12 does not exist"),
        "{message}"
    );
}

#[test]
fn an_existing_server_keeps_running_when_its_image_is_gone() {
    let mut case = Case::new(server(json!({"disks": {"systemSize": "40Gi"}})));
    case.image = None;
    case.vm_exists = true;
    assert_eq!(
        case.admit().map(|a| a.system_disk_size),
        Ok(Quantity("40Gi".into()))
    );

    // Without a size in the spec the disk's size is unknown: say how to fix it.
    case.server = server(json!({}));
    let (reason, message) = only(&case);
    assert_eq!(reason, "ImageNotFound");
    assert!(message.contains("set spec.disks.systemSize"), "{message}");
}

#[test]
fn an_unapproved_image_is_refused() {
    let mut case = Case::new(server(json!({})));
    case.image = Some(image_with(json!({"approved": false})));
    assert_eq!(
        only(&case),
        (
            "ImageNotApproved",
            "spec.image: ServerImage debian-12 is not approved for municipal use".into()
        )
    );
}

#[test]
fn an_image_out_of_support_is_refused_the_last_day_still_counts() {
    let mut case = Case::new(server(json!({})));
    case.image = Some(image_with(json!({"supportEnd": "2025-03-09"})));
    let (reason, message) = only(&case);
    assert_eq!(reason, "ImageOutOfSupport");
    assert!(message.contains("ended on 2025-03-09"), "{message}");

    case.image = Some(image_with(json!({"supportEnd": "2025-03-10"})));
    assert!(case.admit().is_ok(), "support ends at the end of the day");
}

#[test]
fn an_unreadable_support_end_is_refused_not_a_panic() {
    for garbage in [
        "soon",
        "",
        "2025-13-01",
        "2025-02-30",
        "2025-03-10T00:00:00Z",
        "10.03.2025",
        "+002025-03-10",
        "２０２５-０３-１０",
    ] {
        let mut case = Case::new(server(json!({})));
        case.image = Some(image_with(json!({ "supportEnd": garbage })));
        let (reason, message) = only(&case);
        assert_eq!(reason, "ImageOutOfSupport", "{garbage}");
        assert!(message.contains("is not a date"), "{garbage}: {message}");
    }
}

#[test]
fn a_running_server_is_never_refused_for_its_images_age() {
    let mut case = Case::new(server(json!({})));
    case.vm_exists = true;
    case.image = Some(image_with(
        json!({"approved": false, "supportEnd": "2020-01-01"}),
    ));
    assert_eq!(
        case.admit().map(|a| a.system_disk_size),
        Ok(Quantity("20Gi".into()))
    );
}

#[test]
fn a_system_disk_smaller_than_the_image_is_refused() {
    let case = Case::new(server(json!({"disks": {"systemSize": "10Gi"}})));
    let (reason, message) = only(&case);
    assert_eq!(reason, "ImageTooLarge");
    assert_eq!(
        message,
        "spec.disks.systemSize: 10Gi is smaller than ServerImage debian-12 needs (20Gi); omit it or give at least 20Gi"
    );
    // `20480Mi` is the same size as `20Gi`.
    let case = Case::new(server(json!({"disks": {"systemSize": "20480Mi"}})));
    assert!(case.admit().is_ok());
}

#[test]
fn an_image_with_an_unreadable_minimum_is_refused() {
    let mut case = Case::new(server(json!({})));
    case.image = Some(image_with(json!({"minDiskSize": "big"})));
    let (reason, message) = only(&case);
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.starts_with("ServerImage debian-12: minDiskSize"),
        "{message}"
    );
}

#[test]
fn a_secret_of_another_namespace_is_refused() {
    let case = Case::new(server(json!({
        "cloudInit": {"secretRef": {"name": "init", "namespace": "muni-ventspils"}},
    })));
    let (reason, message) = only(&case);
    assert_eq!(reason, "ForeignSecret");
    assert!(
        message.starts_with(
            "spec.cloudInit.secretRef.namespace: muni-ventspils is not this server's namespace muni-talsi"
        ),
        "{message}"
    );
    for fine in [
        json!({"name": "init"}),
        json!({"name": "init", "namespace": NAMESPACE}),
    ] {
        let case = Case::new(server(json!({"cloudInit": {"secretRef": fine}})));
        assert!(case.admit().is_ok());
    }
}

#[test]
fn sources_must_be_networks_within_the_municipalitys_ranges() {
    let case = Case::new(server(json!({"expose": {"ports": [
        {"port": 22, "allowedSources": ["10.20.1.0/24", "10.30.0.0/16"]},
        {"port": 443, "allowedSources": ["garbage/8", "10.20.1.5/24", "2001:db8:21::/48", "10.0.0.0/8"]},
    ]}})));
    let refused = case.refused();
    assert_eq!(
        refused,
        [
            (
                "InvalidSpec",
                "spec.expose.ports[1].allowedSources[0]: garbage/8 is not a CIDR network; write it like 10.20.0.0/16 or 2001:db8::/48".to_string()
            ),
            (
                "InvalidSpec",
                "spec.expose.ports[1].allowedSources[1]: 10.20.1.5/24 has host bits set; did you mean 10.20.1.0/24?".to_string()
            ),
            (
                "SourceOutsideNetworkRanges",
                "spec.expose.ports[0].allowedSources[1]: 10.30.0.0/16 lies outside the municipality's networks".to_string()
            ),
            (
                "SourceOutsideNetworkRanges",
                "spec.expose.ports[1].allowedSources[2]: 2001:db8:21::/48 lies outside the municipality's networks".to_string()
            ),
            (
                "SourceOutsideNetworkRanges",
                "spec.expose.ports[1].allowedSources[3]: 10.0.0.0/8 lies outside the municipality's networks (the municipality's allowedNetworkRanges are 10.20.0.0/16, 2001:db8:20::/48)".to_string()
            ),
        ]
    );
}

#[test]
fn a_municipality_without_usable_ranges_admits_no_source() {
    let mut case = Case::new(server(json!({"expose": {"ports": [
        {"port": 22, "allowedSources": ["10.20.1.0/24"]},
    ]}})));
    case.municipality = Some(municipality_with(
        json!({"allowedNetworkRanges": ["0.0.0.0/0", "10.20.0.1/16", "nonsense"]}),
    ));
    let (reason, message) = only(&case);
    assert_eq!(reason, "SourceOutsideNetworkRanges");
    assert!(
        message.ends_with("(the municipality has no usable allowedNetworkRanges)"),
        "{message}"
    );
}

#[test]
fn many_bad_sources_are_summed_up_not_listed() {
    let sources: Vec<String> = (0..32).map(|i| format!("192.168.{i}.0/24")).collect();
    let ports: Vec<Value> = (0..16)
        .map(|p| json!({"port": 1000 + p, "allowedSources": sources}))
        .collect();
    let case = Case::new(server(json!({"expose": {"ports": ports}})));
    let refused = case.refused();
    assert_eq!(refused.len(), MAX_LISTED);
    let last = &refused[MAX_LISTED - 1].1;
    assert!(last.contains("(and 507 more like it)"), "{last}");
    assert!(describe_refusals(&case.refusals()).len() <= MAX_DESCRIPTION);
}

#[test]
fn schedules_and_windows_must_parse() {
    let case = Case::new(server(json!({
        "backup": {"schedule": "0 25 * * *"},
        "maintenanceWindow": {"start": "25:00", "durationMinutes": 60},
    })));
    let refused = case.refused();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert_eq!(refused[0].0, "InvalidSpec");
    assert!(
        refused[0]
            .1
            .starts_with("spec.backup.schedule: `0 25 * * *` is not a valid cron schedule"),
        "{}",
        refused[0].1
    );
    assert_eq!(
        refused[1],
        (
            "InvalidSpec",
            "spec.maintenanceWindow: start `25:00` is not a time of day; write it as HH:MM in UTC, e.g. 02:00".to_string()
        )
    );
}

#[test]
fn out_of_bounds_shapes_are_refused_with_their_field() {
    let case = Case::new(server(json!({
        "cpu": 0,
        "memory": "-4Gi",
        "disks": {"systemSize": "100Pi", "data": [
            {"name": "data", "size": "lots"},
            {"name": "data", "size": "512Mi"},
        ]},
        "backup": {"schedule": "@daily", "retention": 0},
        "maintenanceWindow": {"start": "02:00", "durationMinutes": 5},
        "expose": {"ports": [{"port": 70000, "allowedSources": ["10.20.0.0/16"]}]},
    })));
    let messages: Vec<String> = case
        .refused()
        .into_iter()
        .inspect(|(reason, _)| assert_eq!(*reason, "InvalidSpec"))
        .map(|(_, message)| message)
        .collect();
    assert_eq!(
        messages,
        [
            "spec.cpu: 0 is outside 1–64",
            "spec.memory: `-4Gi` is negative",
            "spec.disks.systemSize: 100Pi is outside 1Gi–64Ti",
            "spec.disks.data[0].size: `lots` is not a quantity (expected a number with an optional suffix such as m, Mi, Gi or Ti)",
            "spec.disks.data[1].name: data is used by another data disk; names must be unique",
            "spec.disks.data[1].size: 512Mi is outside 1Gi–64Ti",
            "spec.backup.retention: 0 is outside 1–100",
            "spec.maintenanceWindow: durationMinutes 5 is outside 30–720",
            "spec.expose.ports[0].port: 70000 is outside 1–65535",
        ]
    );
}

#[test]
fn absurd_sizes_are_refused_not_overflowed() {
    for memory in [
        "1e400",
        "99999999999999999999999999Ei",
        "1Ti1",
        "4 Gi",
        "0",
        "257Ti",
    ] {
        let case = Case::new(server(json!({ "cpu": 65, "memory": memory })));
        let refused = case.refused();
        assert!(
            refused.iter().all(|(reason, _)| *reason == "InvalidSpec"),
            "{memory}: {refused:#?}"
        );
        assert!(
            refused.iter().any(|(_, m)| m.starts_with("spec.memory: ")),
            "{memory}"
        );
        assert!(
            refused
                .iter()
                .any(|(_, m)| m == "spec.cpu: 65 is outside 1–64")
        );
    }
    let disks: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("d{i}"), "size": "1Gi"}))
        .collect();
    let case = Case::new(server(json!({"disks": {"data": disks}})));
    assert_eq!(
        only(&case),
        (
            "InvalidSpec",
            "spec.disks.data: 9 disks, at most 8 are allowed".into()
        )
    );
}

#[test]
fn a_server_outside_any_municipality_is_refused() {
    let mut case = Case::new(server(json!({})));
    case.municipality = None;
    let (reason, message) = only(&case);
    assert_eq!(reason, "MunicipalityNotFound");
    assert!(
        message.contains("no Municipality owns namespace muni-talsi"),
        "{message}"
    );
}

#[test]
fn every_problem_is_reported_at_once_in_fixing_order() {
    let mut case = Case::new(server(json!({
        "cpu": 99,
        "cloudInit": {"secretRef": {"name": "x", "namespace": "kube-system"}},
        "expose": {"ports": [{"port": 22, "allowedSources": ["8.8.8.0/24"]}]},
        "memory": "80Gi",
    })));
    case.image = Some(image_with(json!({"approved": false})));
    let mut reasons: Vec<&str> = case.refused().into_iter().map(|(r, _)| r).collect();
    reasons.dedup();
    assert_eq!(
        reasons,
        [
            "ImageNotApproved",
            "ForeignSecret",
            "InvalidSpec",
            "SourceOutsideNetworkRanges",
            "QuotaExceeded",
        ]
    );
}

#[test]
fn memory_beyond_the_quota_names_the_servers() {
    let mut case = Case::new(server_with("web", 30, json!({"memory": "4Gi"})));
    case.siblings = vec![server_with("db", 10, json!({"memory": "64Gi", "cpu": 8}))];
    assert_eq!(
        only(&case),
        (
            "QuotaExceeded",
            "memory: 68Gi requested of 64Gi allowed, 4Gi over (servers: web 4Gi, db 64Gi)".into()
        )
    );
}

#[test]
fn cpu_servers_and_storage_are_all_checked() {
    let mut case = Case::new(server_with(
        "web",
        30,
        json!({"cpu": 8, "memory": "1Gi", "disks": {"data": [{"name": "data", "size": "1Ti"}]}}),
    ));
    case.municipality = Some(municipality_with(json!({"quotas": {
        "cpu": "12500m", "memory": "64Gi", "storage": "1Ti", "maxVirtualServers": 1,
    }})));
    case.siblings = vec![server_with(
        "db",
        10,
        json!({"cpu": 6, "memory": "1Gi", "disks": {"systemSize": "30Gi"}}),
    )];
    let refused = case.refused();
    assert_eq!(
        refused,
        [
            (
                "QuotaExceeded",
                "servers: 2 requested of 1 allowed, 1 over (web, db)".to_string()
            ),
            (
                "QuotaExceeded",
                "cpu: 14 requested of 12500m allowed, 1500m over (servers: web 8, db 6)".to_string()
            ),
            (
                "QuotaExceeded",
                "storage: 1074Gi requested of 1Ti allowed, 50Gi over (servers: web 1044Gi, db 30Gi)".to_string()
            ),
        ]
    );
}

#[test]
fn two_servers_created_at_once_cannot_both_pass_or_both_fail() {
    // Room for one 40Gi server, two ask at the same second: the name decides.
    let quotas = json!({"quotas": {"cpu": "16", "memory": "40Gi", "storage": "2Ti", "maxVirtualServers": 10}});
    let alpha = server_with("alpha", 0, json!({"memory": "40Gi"}));
    let beta = server_with("beta", 0, json!({"memory": "40Gi"}));
    let verdict = |me: &VirtualServer, other: &VirtualServer| {
        let mut case = Case::new(me.clone());
        case.municipality = Some(municipality_with(quotas.clone()));
        case.siblings = vec![other.clone()];
        case.admit().is_ok()
    };
    assert!(verdict(&alpha, &beta));
    assert!(!verdict(&beta, &alpha));
    // A newer server that was admitted first (it already runs) keeps its place.
    let running_beta = with_phase(beta.clone(), Phase::Running);
    assert!(!verdict(&alpha, &running_beta));
    // A newer server still pending does not block an older one.
    let pending_beta = with_phase(beta, Phase::Pending);
    assert!(verdict(&alpha, &pending_beta));
}

#[test]
fn older_servers_count_first_and_foreign_or_self_entries_do_not() {
    let me = server_with("web", 30, json!({"memory": "40Gi"}));
    let mut case = Case::new(me.clone());
    let mut elsewhere = server_with("db", 0, json!({"memory": "40Gi"}));
    elsewhere.metadata.namespace = Some("muni-ventspils".into());
    let mut untimed = server_with("cache", 0, json!({"memory": "40Gi"}));
    untimed.metadata.creation_timestamp = None;
    // The server itself in the sibling list (the caller passed the whole namespace).
    case.siblings = vec![me, elsewhere, untimed];
    assert!(case.admit().is_ok(), "{:#?}", case.admit());

    case.siblings
        .push(server_with("old", 5, json!({"memory": "30Gi"})));
    let (reason, message) = only(&case);
    assert_eq!(reason, "QuotaExceeded");
    assert_eq!(
        message,
        "memory: 70Gi requested of 64Gi allowed, 6Gi over (servers: web 40Gi, old 30Gi)"
    );
}

#[test]
fn storage_says_which_system_disks_it_could_not_count() {
    let mut case = Case::new(server_with(
        "web",
        30,
        json!({"disks": {"data": [{"name": "data", "size": "2Ti"}]}}),
    ));
    case.siblings = vec![
        // Same image as this server: its minimum is known.
        server_with("same", 1, json!({})),
        // Another image, no size in the spec: unknown, counted as zero.
        server_with("other", 2, json!({"image": "windows-2022"})),
    ];
    let (reason, message) = only(&case);
    assert_eq!(reason, "QuotaExceeded");
    assert_eq!(
        message,
        "storage: 2088Gi requested of 2Ti allowed, 40Gi over (servers: web 2068Gi, same 20Gi, other 0); the system disks of other are not counted: their size depends on an image not at hand"
    );
}

#[test]
fn long_sibling_lists_are_bounded() {
    let mut case = Case::new(server_with("web", 59, json!({"memory": "4Gi"})));
    case.municipality = Some(municipality_with(json!({"quotas": {
        "cpu": "1000", "memory": "64Gi", "storage": "100Ti", "maxVirtualServers": 1000,
    }})));
    case.siblings = (0..40)
        .map(|i| {
            server_with(
                &format!("s{i:02}"),
                0,
                json!({"memory": format!("{}Gi", 1 + i % 3)}),
            )
        })
        .collect();
    let (_, message) = only(&case);
    assert_eq!(
        message,
        "memory: 83Gi requested of 64Gi allowed, 19Gi over (servers: web 4Gi, s02 3Gi, s05 3Gi, s08 3Gi, s11 3Gi, and 36 more)"
    );
}

#[test]
fn a_municipality_with_unreadable_quotas_admits_nothing() {
    let mut case = Case::new(server(json!({})));
    case.municipality = Some(municipality_with(json!({"quotas": {"memory": "plenty"}})));
    let (reason, message) = only(&case);
    assert_eq!(reason, "QuotaExceeded");
    assert!(message.contains("spec.quotas.memory"), "{message}");
}

#[test]
fn a_spec_change_beyond_the_quota_is_refused_for_a_running_server_too() {
    let mut case = Case::new(server(json!({"memory": "65Gi"})));
    case.vm_exists = true;
    let (reason, _) = only(&case);
    assert_eq!(reason, "QuotaExceeded");
}

#[test]
fn hostile_objects_never_panic() {
    let mut hostile = server(json!({
        "cpu": i32::MIN,
        "memory": "9".repeat(10_000),
        "disks": {"systemSize": "-0", "data": [{"name": "", "size": "."}]},
        "cloudInit": {"secretRef": {"name": "x", "namespace": ""}},
        "expose": {"ports": [{"port": i32::MIN, "allowedSources": ["/", "::/0", "0.0.0.0/0", "1.2.3.4/33", ""]}]},
        "backup": {"schedule": "\u{0}", "retention": i32::MIN},
        "maintenanceWindow": {"days": [], "start": "\u{FFFF}", "durationMinutes": i32::MIN},
    }));
    hostile.metadata = Default::default();
    let mut case = Case::new(hostile.clone());
    case.image = Some(image_with(
        json!({"minDiskSize": "", "supportEnd": "9".repeat(5000)}),
    ));
    case.municipality = Some(municipality_with(json!({
        "quotas": {"cpu": "-1", "memory": "", "storage": "1e999999", "maxVirtualServers": -5},
        "allowedNetworkRanges": ["::/0", "x"],
    })));
    case.siblings = vec![hostile.clone(), hostile];
    let refusals = case.refusals();
    assert!(!refusals.is_empty());
    let description = describe_refusals(&refusals);
    assert!(
        description.len() <= MAX_DESCRIPTION,
        "{}",
        description.len()
    );
}

#[test]
fn descriptions_are_cut_on_a_character_boundary() {
    let refusals = vec![Refusal::new(
        reason::INVALID_SPEC,
        "ā".repeat(MAX_DESCRIPTION),
    )];
    let description = describe_refusals(&refusals);
    assert!(description.len() <= MAX_DESCRIPTION);
    assert!(description.ends_with('…'));
    let short = vec![
        Refusal::new(reason::INVALID_SPEC, "one"),
        Refusal::new(reason::FOREIGN_SECRET, "two"),
    ];
    assert_eq!(describe_refusals(&short), "one; two");
}
