//! The operator at scale: CPU time of a no-op Municipality reconcile (build + diff) and the
//! memory of the operator's caches with 500 Municipalities and 10,000 VirtualServers.
//!
//! Run: `cargo bench -p novads-operator --bench reconcile`. Prints figures; asserts nothing
//! about speed (only that the generated reconciles really are no-ops).
//! `NOVADS_BENCH_PASSES` (default 20) sets how many timed passes over all municipalities run;
//! `NOVADS_BENCH_DUMP=1` prints the first generated Municipality and VirtualServer as listed.
//!
//! What is measured:
//! - **build + diff**: what `municipality::apply` computes for a Municipality whose tenancy
//!   and status are already up to date — `plan_tenancy`, `namespace_conflict`, the ten
//!   server-side apply bodies serialised as kube's `Patch::Apply` does (`serde_json::to_vec`),
//!   `usage_from_quota`, `next_status` and the comparison with the current status that decides
//!   whether to write. No I/O.
//! - the same **plus decoding the 13 API responses** a reconcile receives (the namespace GET and
//!   twelve apply responses, with their managedFields), which kube does on the same thread.
//! - **memory**: the process RSS before and after filling `kube::runtime::reflector` stores
//!   the way the runtime does — each object decoded from JSON as the watcher receives it (with
//!   managedFields, labels, annotations), `managed_fields_mut().clear()`, then
//!   `Writer::apply_watcher_event` (Init, InitApply…, InitDone, as after a list).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, NamespaceStatus, ResourceQuota, ResourceQuotaStatus,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, FieldsV1, ManagedFieldsEntry, ObjectMeta, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use novads_crds::{
    ComplianceSummary, DeletionPolicy, Municipality, MunicipalityQuotas, MunicipalitySpec, Phase,
    RunStrategy, SecurityProfile, VirtualServer, VirtualServerSpec, VirtualServerStatus,
};
use novads_operator::TenancySettings;
use novads_operator::municipality::build::{self as tenancy, Tenancy};
use novads_operator::municipality::controller::{self as municipality, FINALIZER, Outcome};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const MUNICIPALITIES: usize = 500;
const VIRTUAL_SERVERS: usize = 10_000;
const WARMUP_PASSES: usize = 2;
const CRD_API_VERSION: &str = "novads.io/v1alpha1";

fn main() {
    let passes = std::env::var("NOVADS_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20usize);
    let settings = TenancySettings {
        group_prefix: "oidc:".to_string(),
    };
    println!(
        "operator benchmark: {MUNICIPALITIES} municipalities, {VIRTUAL_SERVERS} virtual servers, \
         {passes} timed passes, {} CPU(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // --- Memory: the caches, filled as the runtime fills them. ---
    let mut rng = Rng(0x6e6f_7661_6473);
    let servers_per_municipality = spread(&mut rng, VIRTUAL_SERVERS, MUNICIPALITIES);
    let rss_before = rss_kib();
    let dump = std::env::var_os("NOVADS_BENCH_DUMP").is_some();
    let mut listed_bytes = 0usize;
    let mut cached_bytes = 0usize;
    let (municipality_store, mut municipality_writer) = reflector::store::<Municipality>();
    let (server_store, mut server_writer) = reflector::store::<VirtualServer>();
    municipality_writer.apply_watcher_event(&watcher::Event::Init);
    server_writer.apply_watcher_event(&watcher::Event::Init);
    for (index, &servers) in servers_per_municipality.iter().enumerate() {
        let municipality = generate_municipality(&mut rng, index, servers);
        if dump && index == 0 {
            print_json(&municipality);
        }
        let (object, listed, cached) = as_watched(&municipality);
        listed_bytes += listed;
        cached_bytes += cached;
        municipality_writer.apply_watcher_event(&watcher::Event::InitApply(object));
        for number in 0..servers {
            let server = generate_virtual_server(&mut rng, &municipality, number);
            if dump && index == 0 && number == 0 {
                print_json(&server);
            }
            let (object, listed, cached) = as_watched(&server);
            listed_bytes += listed;
            cached_bytes += cached;
            server_writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
    }
    municipality_writer.apply_watcher_event(&watcher::Event::InitDone);
    server_writer.apply_watcher_event(&watcher::Event::InitDone);
    let rss_after = rss_kib();
    assert_eq!(municipality_store.len(), MUNICIPALITIES);
    assert_eq!(server_store.len(), VIRTUAL_SERVERS);
    println!(
        "objects as listed (JSON, with managedFields): {:.1} MiB; after stripping managedFields: \
         {:.1} MiB",
        mib(listed_bytes),
        mib(cached_bytes)
    );
    println!(
        "RSS with {MUNICIPALITIES} Municipality + {VIRTUAL_SERVERS} VirtualServer cached: \
         {:.1} MiB (before filling the caches {:.1} MiB, delta {:.1} MiB); target < 150 MiB RSS",
        kib_to_mib(rss_after),
        kib_to_mib(rss_before),
        kib_to_mib(rss_after.saturating_sub(rss_before))
    );

    // --- CPU: no-op reconciles of the cached Municipalities. ---
    let cases = reconcile_cases(&municipality_store, &settings);
    let build_and_diff = measure(passes, &cases, |case| {
        noop_reconcile(case, &settings, &case.existing_namespace)
    });
    report(
        &format!("no-op reconcile (build + diff), {MUNICIPALITIES} municipalities"),
        build_and_diff,
    );
    let with_responses = measure(passes, &cases, |case| {
        let existing: Namespace = decode(&case.responses[0]);
        let applied = decode_apply_responses(&case.responses[1..]);
        noop_reconcile(case, &settings, &existing) + applied
    });
    report(
        &format!(
            "no-op reconcile (build + diff + decoding the 13 API responses), {MUNICIPALITIES} \
             municipalities"
        ),
        with_responses,
    );
    println!("target: < 1 ms CPU per no-op reconcile");
    drop((municipality_store, server_store));
}

fn print_json<K: Serialize>(object: &K) {
    println!(
        "{}",
        serde_json::to_string_pretty(object).expect("serialise object")
    );
}

// ----------------------------------------------------------------------------------------------
// The reconcile's pure work.

/// One cached Municipality with what the API server would answer during its reconcile.
struct Case {
    municipality: std::sync::Arc<Municipality>,
    /// The namespace as `GET` returns it (input of `namespace_conflict`).
    existing_namespace: Namespace,
    /// The ResourceQuota as the apply returns it (its status holds the usage).
    applied_quota: ResourceQuota,
    /// JSON answers: the namespace GET, then the twelve apply responses in apply order.
    responses: Vec<Vec<u8>>,
}

/// What `municipality::apply` computes when nothing changed; returns the bytes it would send
/// (so nothing is optimised away) and panics if the reconcile would write anything but the
/// server-side applies.
fn noop_reconcile(case: &Case, settings: &TenancySettings, existing: &Namespace) -> usize {
    let municipality = &*case.municipality;
    let plan = tenancy::plan_tenancy(municipality, settings).and_then(|tenancy| {
        match tenancy::namespace_conflict(municipality, Some(existing)) {
            Some(conflict) => Err(vec![conflict]),
            None => Ok(tenancy),
        }
    });
    let Ok(tenancy) = plan else {
        panic!("{}: generated spec is invalid", municipality.name_any());
    };
    let sent = apply_bodies(&tenancy);
    let usage = municipality::usage_from_quota(&case.applied_quota);
    let status = municipality.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let changed =
        status.and_then(|s| s.observed_generation) != municipality.metadata.generation || !ready;
    let next = municipality::next_status(
        municipality,
        &Outcome::Ready { usage },
        &Time(Timestamp::now()),
    );
    let write_status = municipality::status_changed(status, &next);
    assert!(
        !changed && !write_status,
        "{}: not a no-op",
        municipality.name_any()
    );
    sent
}

/// The server-side apply bodies, serialised as kube's `Patch::Apply` does.
fn apply_bodies(tenancy: &Tenancy) -> usize {
    fn body<K: Serialize>(object: &K) -> usize {
        black_box(serde_json::to_vec(object).expect("serialise apply body")).len()
    }
    body(&tenancy.namespace)
        + body(&tenancy.resource_quota)
        + body(&tenancy.limit_range)
        + tenancy.network_policies.iter().map(body).sum::<usize>()
        + tenancy.role_bindings.iter().map(body).sum::<usize>()
        + body(&tenancy.reader_role)
        + body(&tenancy.reader_binding)
}

fn decode<K: DeserializeOwned>(bytes: &[u8]) -> K {
    serde_json::from_slice(bytes).expect("decode API response")
}

/// Decodes the twelve apply responses as their kinds (as `Api::patch` does).
fn decode_apply_responses(responses: &[Vec<u8>]) -> usize {
    let [
        namespace,
        quota,
        limit_range,
        policies @ ..,
        admins,
        viewers,
        reader_role,
        reader_binding,
    ] = responses
    else {
        panic!("expected twelve apply responses");
    };
    black_box(decode::<Namespace>(namespace));
    black_box(decode::<ResourceQuota>(quota));
    black_box(decode::<LimitRange>(limit_range));
    for policy in policies {
        black_box(decode::<NetworkPolicy>(policy));
    }
    black_box(decode::<RoleBinding>(admins));
    black_box(decode::<RoleBinding>(viewers));
    black_box(decode::<ClusterRole>(reader_role));
    black_box(decode::<ClusterRoleBinding>(reader_binding));
    responses.len()
}

/// Prepares every cached Municipality for its reconcile: what the API server answers, and a
/// status that the reconcile finds up to date.
fn reconcile_cases(store: &Store<Municipality>, settings: &TenancySettings) -> Vec<Case> {
    let mut municipalities = store.state();
    municipalities.sort_by_key(|m| m.name_any());
    municipalities
        .into_iter()
        .map(|municipality| {
            let tenancy =
                tenancy::plan_tenancy(&municipality, settings).expect("generated spec is valid");
            let mut existing_namespace = tenancy.namespace.clone();
            server_metadata(&mut existing_namespace.metadata, "namespaces");
            existing_namespace
                .metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    "kubernetes.io/metadata.name".to_string(),
                    municipality.namespace_name(),
                );
            existing_namespace.status = Some(NamespaceStatus {
                phase: Some("Active".to_string()),
                ..NamespaceStatus::default()
            });
            let mut applied_quota = tenancy.resource_quota.clone();
            server_metadata(&mut applied_quota.metadata, "resourcequotas");
            let usage = municipality
                .status
                .as_ref()
                .and_then(|s| s.usage.clone())
                .unwrap_or_default();
            let used = [
                ("requests.cpu", usage.cpu.map(|q| q.0)),
                ("requests.memory", usage.memory.map(|q| q.0)),
                ("requests.storage", usage.storage.map(|q| q.0)),
                (
                    "count/virtualmachines.kubevirt.io",
                    usage.virtual_servers.map(|n| n.to_string()),
                ),
                ("pods", usage.virtual_servers.map(|n| n.to_string())),
            ];
            applied_quota.status = Some(ResourceQuotaStatus {
                hard: applied_quota.spec.as_ref().and_then(|s| s.hard.clone()),
                used: Some(
                    used.into_iter()
                        .filter_map(|(k, v)| Some((k.to_string(), Quantity(v?))))
                        .collect(),
                ),
            });
            let responses = response_bodies(&tenancy, &existing_namespace, &applied_quota);
            let case = Case {
                municipality,
                existing_namespace,
                applied_quota,
                responses,
            };
            // Check once, untimed, that the generated state is a no-op.
            noop_reconcile(&case, settings, &case.existing_namespace);
            case
        })
        .collect()
}

/// The JSON the API server answers: the namespace GET, then each applied object with the
/// server's metadata (uid, resourceVersion, managedFields of the apply).
fn response_bodies(
    tenancy: &Tenancy,
    existing_namespace: &Namespace,
    applied_quota: &ResourceQuota,
) -> Vec<Vec<u8>> {
    fn answered<K: Serialize + Resource + Clone>(object: &K, plural: &str) -> Vec<u8> {
        let mut object = object.clone();
        server_metadata(object.meta_mut(), plural);
        serde_json::to_vec(&object).expect("serialise response")
    }
    let namespace = serde_json::to_vec(existing_namespace).expect("serialise response");
    let mut responses = vec![
        namespace.clone(),
        namespace,
        serde_json::to_vec(applied_quota).expect("serialise response"),
        answered(&tenancy.limit_range, "limitranges"),
    ];
    responses.extend(
        tenancy
            .network_policies
            .iter()
            .map(|p| answered(p, "networkpolicies")),
    );
    responses.extend(
        tenancy
            .role_bindings
            .iter()
            .map(|b| answered(b, "rolebindings")),
    );
    responses.push(answered(&tenancy.reader_role, "clusterroles"));
    responses.push(answered(&tenancy.reader_binding, "clusterrolebindings"));
    responses
}

/// What the API server adds to an applied child: uid, resourceVersion, creation time and the
/// managedFields entry of the operator's apply.
fn server_metadata(meta: &mut ObjectMeta, plural: &str) {
    let api_version = match plural {
        "networkpolicies" => "networking.k8s.io/v1",
        "rolebindings" | "clusterroles" | "clusterrolebindings" => "rbac.authorization.k8s.io/v1",
        _ => "v1",
    };
    if meta.uid.is_some() {
        return;
    }
    let name = meta.name.clone().unwrap_or_default();
    meta.uid = Some(uuid(
        name.len() as u64 * 7919 + plural.len() as u64,
        meta.namespace.as_deref().unwrap_or(""),
    ));
    meta.resource_version = Some("48211377".to_string());
    meta.creation_timestamp = Some(time(1_714_000_000));
    let fields = json!({"metadata": {"labels": meta.labels, "ownerReferences": meta.owner_references}, "spec": {}});
    meta.managed_fields = Some(vec![managed(
        api_version,
        "novads-operator",
        "Apply",
        None,
        &fields,
        1_714_000_000,
    )]);
}

// ----------------------------------------------------------------------------------------------
// Measuring.

struct Samples {
    wall: Vec<Duration>,
    /// Process CPU time (user + system) of all timed passes.
    cpu: Duration,
}

fn measure(passes: usize, cases: &[Case], mut work: impl FnMut(&Case) -> usize) -> Samples {
    for _ in 0..WARMUP_PASSES {
        for case in cases {
            black_box(work(case));
        }
    }
    let mut wall = Vec::with_capacity(passes * cases.len());
    let cpu_before = process_cpu();
    for _ in 0..passes {
        for case in cases {
            let started = Instant::now();
            black_box(work(case));
            wall.push(started.elapsed());
        }
    }
    Samples {
        wall,
        cpu: process_cpu().saturating_sub(cpu_before),
    }
}

fn report(what: &str, mut samples: Samples) {
    samples.wall.sort();
    let n = samples.wall.len().max(1);
    let mean = samples.wall.iter().sum::<Duration>() / n as u32;
    let at = |percent: usize| samples.wall[(n * percent / 100).min(n - 1)];
    println!(
        "{what}: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs per municipality (wall clock, one \
         thread); process CPU {:.1} µs per municipality",
        micros(mean),
        micros(at(50)),
        micros(at(99)),
        micros(samples.cpu / n as u32),
    );
}

/// User + system CPU time of the process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let timeval = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

/// Resident set size from /proc/self/status, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ----------------------------------------------------------------------------------------------
// Generating the objects.

/// What the watcher does to an object before it is cached: decoded from the JSON the API
/// server sends (managedFields included), then managedFields cleared as `operator/src/watch.rs` does.
/// Returns the object and its JSON size as listed and as cached.
fn as_watched<K>(object: &K) -> (K, usize, usize)
where
    K: Resource + Serialize + DeserializeOwned,
{
    let listed = serde_json::to_vec(object).expect("serialise object");
    let mut watched: K = serde_json::from_slice(&listed).expect("decode object");
    watched.managed_fields_mut().clear();
    let cached = serde_json::to_vec(&watched)
        .expect("serialise object")
        .len();
    (watched, listed.len(), cached)
}

/// A small deterministic generator (xorshift64*), so every run sees the same objects.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// Splits `total` servers over `buckets` municipalities, unevenly (a few large cities, many
/// small municipalities), every municipality with at least one.
fn spread(rng: &mut Rng, total: usize, buckets: usize) -> Vec<usize> {
    let weights: Vec<f64> = (0..buckets)
        .map(|_| {
            let u = (rng.below(1_000) as f64 + 1.0) / 1_000.0;
            u * u * u + 0.02
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|w| ((w / sum) * (total - buckets) as f64) as usize + 1)
        .collect();
    let mut missing = total - counts.iter().sum::<usize>();
    let mut index = 0;
    while missing > 0 {
        counts[index % buckets] += 1;
        missing -= 1;
        index += 7;
    }
    counts
}

const PLACES: &[&str] = &[
    "talsi",
    "ventspils",
    "limbazi",
    "cesis",
    "sigulda",
    "valmiera",
    "kuldiga",
    "saldus",
    "tukums",
    "jelgava",
    "bauska",
    "ogre",
    "aizkraukle",
    "madona",
    "gulbene",
    "balvi",
    "rezekne",
    "ludza",
    "kraslava",
    "augsdaugava",
    "preili",
    "jekabpils",
    "dobele",
    "liepaja",
    "dienvidkurzeme",
    "marupe",
    "adazi",
    "ropazi",
    "salaspils",
    "kekava",
    "olaine",
    "saulkrasti",
    "smiltene",
    "valka",
    "aluksne",
    "varaklani",
    "jurmala",
    "daugavpils",
    "riga",
    "livani",
];
const ADMIN_GROUPS: &[&str] = &[
    "it-admins",
    "IT Admins",
    "infra",
    "server-operators",
    "dome-it",
    "it-outsourcing",
];
const VIEWER_GROUPS: &[&str] = &[
    "it-helpdesk",
    "auditors",
    "finance-it",
    "security-officers",
    "dpo",
    "management",
    "school-it",
];
const REGIONS: &[&str] = &["Kurzeme", "Zemgale", "Vidzeme", "Latgale", "Riga"];

fn time(second: i64) -> Time {
    Time(Timestamp::from_second(second).expect("valid timestamp"))
}

fn uuid(seed: u64, salt: &str) -> String {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.len() as u64 ^ 0x5eed);
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The `fieldsV1` set of everything in `value`, in the API server's notation (`f:<field>`,
/// `k:{...}` for list entries, `v:<value>` for set members).
fn fields_v1(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (format!("f:{key}"), fields_v1(value)))
                .chain(std::iter::once((".".to_string(), json!({}))))
                .collect(),
        ),
        Value::Array(items) => Value::Object(
            items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => {
                        let key = ["type", "name", "uid"]
                            .into_iter()
                            .find_map(|field| Some(json!({ field: map.get(field)? })))
                            .unwrap_or_else(|| json!({}));
                        (format!("k:{key}"), fields_v1(item))
                    }
                    other => (format!("v:{other}"), json!({})),
                })
                .collect(),
        ),
        _ => json!({}),
    }
}

/// [`fields_v1`] of a whole object (the object itself has no `.` entry).
fn top_level_fields(value: &Value) -> Value {
    let mut fields = fields_v1(value);
    if let Some(map) = fields.as_object_mut() {
        map.remove(".");
    }
    fields
}

fn managed(
    api_version: &str,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    fields: &Value,
    second: i64,
) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        api_version: Some(api_version.to_string()),
        fields_type: Some("FieldsV1".to_string()),
        fields_v1: Some(FieldsV1(top_level_fields(fields))),
        manager: Some(manager.to_string()),
        operation: Some(operation.to_string()),
        subresource: subresource.map(str::to_string),
        time: Some(time(second)),
    }
}

/// `kubectl.kubernetes.io/last-applied-configuration` of an object created by `kubectl apply`:
/// what its author wrote (no status, no metadata the API server sets).
fn last_applied<K: Serialize>(object: &K) -> String {
    let mut value = serde_json::to_value(object).expect("serialise object");
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|key, _| {
                matches!(
                    key.as_str(),
                    "name" | "namespace" | "labels" | "annotations"
                )
            });
        }
    }
    value.to_string()
}

fn generate_municipality(rng: &mut Rng, index: usize, servers: usize) -> Municipality {
    let place = PLACES[index % PLACES.len()];
    let code = if index < PLACES.len() {
        place.to_string()
    } else {
        format!("{place}-{}", index / PLACES.len())
    };
    let groups = |rng: &mut Rng, pool: &[&str], max: usize| {
        let mut groups: Vec<String> = (0..rng.below(max + 1))
            .map(|_| rng.pick(pool).to_string())
            .collect();
        groups.sort();
        groups.dedup();
        groups
    };
    let mut admin_groups = groups(rng, ADMIN_GROUPS, 3);
    if admin_groups.is_empty() {
        admin_groups.push("it-admins".to_string());
    }
    let ranges = (0..1 + rng.below(4))
        .map(|n| match rng.below(4) {
            0 => format!("172.{}.0.0/16", 16 + (index + n) % 16),
            1 => format!("2001:db8:{:x}::/48", index * 4 + n),
            _ => format!("10.{}.{}.0/24", index % 250, n * 16 + rng.below(16)),
        })
        .collect::<Vec<_>>();
    let cpu_per_server = 2 + rng.below(4);
    let mut spec = MunicipalitySpec {
        code: code.clone(),
        display_name: format!("{}{} novads", place[..1].to_uppercase(), &place[1..]),
        realm: code.clone(),
        admin_groups,
        viewer_groups: groups(rng, VIEWER_GROUPS, 4),
        security_officer_groups: Vec::new(),
        quotas: MunicipalityQuotas {
            cpu: Quantity(if rng.below(5) == 0 {
                format!("{}500m", servers * cpu_per_server)
            } else {
                (servers * cpu_per_server + 4).to_string()
            }),
            memory: Quantity(format!("{}Gi", servers * 8 + 16)),
            storage: Quantity(if servers > 40 {
                format!("{}Ti", servers / 10 + 1)
            } else {
                format!("{}Gi", servers * 200 + 100)
            }),
            max_virtual_servers: i32::try_from(servers + 2 + rng.below(10)).expect("small number"),
        },
        allowed_network_ranges: ranges,
        security_profile: if index.is_multiple_of(5) {
            SecurityProfile::Elevated
        } else {
            SecurityProfile::Standard
        },
        deletion_policy: if index.is_multiple_of(10) {
            DeletionPolicy::Delete
        } else {
            DeletionPolicy::Retain
        },
    };
    spec.viewer_groups
        .retain(|g| !spec.admin_groups.contains(g));
    let mut municipality = Municipality::new(&code, spec);
    let created = 1_700_000_000 + index as i64 * 3_600;
    municipality.metadata = ObjectMeta {
        name: Some(code.clone()),
        uid: Some(uuid(index as u64, "municipality")),
        resource_version: Some((40_000_000 + index * 17).to_string()),
        generation: Some(1 + (index % 4) as i64),
        creation_timestamp: Some(time(created)),
        finalizers: Some(vec![FINALIZER.to_string()]),
        labels: Some(BTreeMap::from([
            (
                "novads.io/region".to_string(),
                REGIONS[index % REGIONS.len()].to_string(),
            ),
            (
                "app.kubernetes.io/part-of".to_string(),
                "novads".to_string(),
            ),
        ])),
        ..ObjectMeta::default()
    };
    let applied = last_applied(&municipality);
    municipality.annotations_mut().insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        applied,
    );
    municipality.annotations_mut().insert(
        "novads.io/contract".into(),
        format!("VARAM-2025/{index:04}"),
    );

    // The status the operator wrote last time: Ready, with the quota's usage and the
    // security monitor's compliance summary.
    let used_servers = servers.saturating_sub(rng.below(3)) as i64;
    let quota = tenancy::plan_quota(&municipality).expect("generated quota is valid");
    let mut quota_status = ResourceQuota::default();
    let hard_used_cpu = (used_servers as usize * cpu_per_server) as i64 * 1000 + used_servers * 100;
    quota_status.status = Some(ResourceQuotaStatus {
        hard: None,
        used: Some(BTreeMap::from([
            ("requests.cpu".into(), Quantity(format!("{hard_used_cpu}m"))),
            (
                "requests.memory".into(),
                Quantity(format!("{}Mi", used_servers * (4 * 1024 + 400))),
            ),
            (
                "requests.storage".into(),
                Quantity(quota.storage.to_string()),
            ),
            (
                "count/virtualmachines.kubevirt.io".into(),
                Quantity(used_servers.to_string()),
            ),
        ])),
    });
    let usage = municipality::usage_from_quota(&quota_status);
    let mut status = municipality::next_status(
        &municipality,
        &Outcome::Ready { usage },
        &time(created + 60),
    );
    status.compliance = Some(ComplianceSummary {
        passed: 40 + rng.below(20) as i64,
        failed: rng.below(4) as i64,
        warnings: rng.below(8) as i64,
        last_evaluated: Some(time(1_714_000_000 + index as i64)),
    });
    municipality.status = Some(status);

    let spec_fields = json!({
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "", "novads.io/contract": ""},
            "labels": municipality.metadata.labels,
        },
        "spec": municipality.spec,
    });
    let status_fields = json!({"status": municipality.status});
    municipality.metadata.managed_fields = Some(vec![
        managed(
            CRD_API_VERSION,
            "kubectl-client-side-apply",
            "Update",
            None,
            &spec_fields,
            created,
        ),
        managed(
            CRD_API_VERSION,
            "novads-operator",
            "Update",
            None,
            &json!({"metadata": {"finalizers": [FINALIZER]}}),
            created + 1,
        ),
        managed(
            CRD_API_VERSION,
            "novads-operator",
            "Apply",
            Some("status"),
            &status_fields,
            created + 60,
        ),
        managed(
            CRD_API_VERSION,
            "novads-security-monitor",
            "Apply",
            Some("status"),
            &json!({"status": {"compliance": {"passed": 0, "failed": 0, "warnings": 0, "lastEvaluated": ""}}}),
            1_714_000_000,
        ),
    ]);
    municipality
}

const ROLES: &[&str] = &[
    "web", "db", "app", "file", "mail", "dc", "backup", "gis", "erp", "dvs", "vpn", "print",
];
const IMAGES: &[&str] = &[
    "ubuntu-24.04",
    "debian-12",
    "windows-server-2022",
    "rhel-9",
    "almalinux-9",
    "windows-server-2019",
];
const MEMORY: &[&str] = &["2Gi", "4Gi", "4Gi", "8Gi", "8Gi", "16Gi", "32Gi"];
const DEPARTMENTS: &[&str] = &[
    "dome",
    "school",
    "social-services",
    "library",
    "finance",
    "construction",
    "registry",
];

fn generate_virtual_server(
    rng: &mut Rng,
    municipality: &Municipality,
    number: usize,
) -> VirtualServer {
    let role = rng.pick(ROLES);
    let department = rng.pick(DEPARTMENTS);
    let name = format!("{role}-{department}-{number:02}");
    let namespace = municipality.namespace_name();
    let run_strategy = match rng.below(20) {
        0 => RunStrategy::Halted,
        1 => RunStrategy::Manual,
        2 => RunStrategy::RerunOnFailure,
        _ => RunStrategy::Running,
    };
    let mut server = VirtualServer::new(
        &name,
        VirtualServerSpec {
            image: rng.pick(IMAGES).to_string(),
            cpu: 1 + rng.below(8) as i32,
            memory: Quantity(rng.pick(MEMORY).to_string()),
            run_strategy,
            disks: Default::default(),
            restart: None,
            ssh: None,
            cloud_init: None,
            expose: None,
            backup: None,
            maintenance_window: None,
            restore: None,
        },
    );
    let created = 1_705_000_000 + rng.below(10_000_000) as i64;
    let generation = 1 + rng.below(3) as i64;
    server.metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        uid: Some(uuid(rng.next(), &name)),
        resource_version: Some((41_000_000 + rng.below(7_000_000)).to_string()),
        generation: Some(generation),
        creation_timestamp: Some(time(created)),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), role.to_string()),
            (
                "novads.io/municipality".to_string(),
                municipality.spec.code.clone(),
            ),
            ("novads.io/department".to_string(), department.to_string()),
            (
                "novads.io/environment".to_string(),
                if rng.below(4) == 0 { "test" } else { "prod" }.to_string(),
            ),
        ])),
        annotations: Some(BTreeMap::from([(
            "novads.io/description".to_string(),
            format!(
                "{} server of the {department} department, {}",
                role.to_uppercase(),
                municipality.spec.display_name
            ),
        )])),
        ..ObjectMeta::default()
    };
    // Two thirds are created with `kubectl apply`, the rest through the novads API.
    let kubectl = rng.below(3) != 0;
    if kubectl {
        let applied = last_applied(&server);
        server.annotations_mut().insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            applied,
        );
    }
    let (phase, ready) = match run_strategy {
        RunStrategy::Halted => (Phase::Stopped, "False"),
        _ => (Phase::Running, "True"),
    };
    server.status = Some(VirtualServerStatus {
        phase: Some(phase),
        conditions: vec![
            Condition {
                type_: "Ready".to_string(),
                status: ready.to_string(),
                reason: if ready == "True" {
                    "Running"
                } else {
                    "Stopped"
                }
                .to_string(),
                message: format!(
                    "VirtualMachine {namespace}/{name} is {}",
                    format!("{phase:?}").to_lowercase()
                ),
                last_transition_time: time(created + 300),
                observed_generation: Some(generation),
            },
            Condition {
                type_: "Progressing".to_string(),
                status: "False".to_string(),
                reason: "Provisioned".to_string(),
                message: "the disk is imported and the VirtualMachine exists".to_string(),
                last_transition_time: time(created + 240),
                observed_generation: Some(generation),
            },
            Condition {
                type_: "Degraded".to_string(),
                status: "False".to_string(),
                reason: "AsExpected".to_string(),
                message: "nothing is failing".to_string(),
                last_transition_time: time(created + 240),
                observed_generation: Some(generation),
            },
        ],
        observed_generation: Some(generation),
        ..VirtualServerStatus::default()
    });
    let spec_fields = json!({
        "metadata": {"annotations": server.metadata.annotations, "labels": server.metadata.labels},
        "spec": server.spec,
    });
    let status_fields = json!({"status": server.status});
    server.metadata.managed_fields = Some(vec![
        managed(
            CRD_API_VERSION,
            if kubectl {
                "kubectl-client-side-apply"
            } else {
                "novads-api"
            },
            if kubectl { "Update" } else { "Apply" },
            None,
            &spec_fields,
            created,
        ),
        managed(
            CRD_API_VERSION,
            "novads-operator",
            "Apply",
            Some("status"),
            &status_fields,
            created + 300,
        ),
    ]);
    server
}
