//! The VirtualServer controller at scale: the memory of its caches, CPU time of the
//! build-and-diff of one converged server, and how fast 10,000 servers converge from a cold
//! start.
//!
//! Run: `cargo bench -p novads-operator --bench virtual_server`. Prints figures; asserts
//! nothing about speed (only that the converged servers really are no-ops and that the cold
//! start converges). `NOVADS_BENCH_PASSES` (default 10) sets the timed passes of the first
//! figure; `NOVADS_BENCH_SERVERS` (default 10000) the number of servers and
//! `NOVADS_BENCH_MUNICIPALITIES` (default 1000) how many namespaces they are spread over
//! (admission counts the namespace's servers, so fewer namespaces make longer lists);
//! `NOVADS_BENCH_ONLY=cold-start` runs only the cold start from the caches (for a profiler),
//! `NOVADS_BENCH_ONLY=cache-memory` only the memory of the caches.
//!
//! What is measured:
//! - **memory**: the RSS of a process that holds the controller's caches and nothing else
//!   (this benchmark run again with `NOVADS_BENCH_ONLY=cache-memory`): its baseline, then
//!   after each cache is filled, one object at a time decoded from the JSON a watch delivers and
//!   kept as the runtime keeps it (trimmed servers, records of the children), each converged
//!   case generated on the fly and dropped. Filled with what a converged fleet holds:
//!   Municipalities and images, namespaces (metadata), servers (with status), VMs, instances,
//!   a week of snapshots for each server with backups, Services and NetworkPolicies of the
//!   exposed ones.
//! - **build + diff**: what a reconcile of a converged server computes between its reads and
//!   its writes — `controller::plan` (admission against the namespace's siblings and the
//!   municipality's quota, the four builders, the restart and backup decisions), the digests
//!   of the VM, Service and NetworkPolicy and their comparison with the cached objects
//!   (`controller::unchanged`), `status::next_status` and the comparison that decides not to
//!   write the status. No I/O.
//! - **cold start**: every server exists (with its namespace, Municipality and ServerImage)
//!   but nothing was reconciled. `controller::reconcile` runs over all of them, 8 at a time as
//!   the runtime's default concurrency does, each on a task of its own as the runtime runs it
//!   (`watch::on_worker`, so that both worker threads work), round after round, each server again until one of
//!   its reconciles changes nothing (resourceVersion unchanged), against an in-process API
//!   service that answers at once and plays KubeVirt (a new VM runs at once, a snapshot is
//!   ready at once). The figures include the fake API's own work (decoding requests, encoding
//!   responses): everything but the network. It runs twice: reading everything from the API
//!   (as without caches), then from the caches (as the runtime does), which every write
//!   of the fake API reaches at once, as an instant watch would. After convergence, one more
//!   round over every server counts the API requests a converged reconcile makes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use novads_crds::{Municipality, ServerImage, VirtualServer};
use novads_operator::kubevirt::{VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot};
use novads_operator::virtual_server::build;
use novads_operator::virtual_server::controller::unchanged;
use novads_operator::virtual_server::controller::{
    self, Caches, Context, FINALIZER, Observations, Plan,
};
use novads_operator::virtual_server::namespace_index::ServersByNamespace;
use novads_operator::virtual_server::records::{
    self, NetworkPolicyRecord, Record, Records, RecordsWriter, ServiceRecord, SnapshotRecord,
    VmRecord, VmiRecord,
};
use novads_operator::virtual_server::status::{self, Observed};
use novads_operator::virtual_server::watch::trim_server;
use novads_operator::watch::on_worker;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const CONCURRENCY: usize = 8;
const WARMUP_PASSES: usize = 2;
const NOW: &str = "2025-06-02T10:00:00Z";

fn main() {
    let passes = env_number("NOVADS_BENCH_PASSES", 10);
    let servers = env_number("NOVADS_BENCH_SERVERS", 10_000);
    let municipalities = env_number("NOVADS_BENCH_MUNICIPALITIES", 1000).clamp(1, servers);
    let only = std::env::var("NOVADS_BENCH_ONLY");
    // The caches' memory is measured in a process of its own, which holds nothing else.
    if only.as_deref() == Ok("cache-memory") {
        return cache_memory(servers, municipalities);
    }
    println!(
        "VirtualServer benchmark: {servers} servers in {municipalities} municipalities, \
         {passes} timed passes, {} CPU(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    match only.as_deref() {
        // The cached cold start alone (for profiling it).
        Ok("cold-start") => return cold_start(&Fleet::generate(servers, municipalities), true),
        _ => measure_cache_memory_apart(),
    }
    let fleet = Fleet::generate(servers, municipalities);
    build_and_diff(&fleet, passes);
    cold_start(&fleet, false);
    cold_start(&fleet, true);
}

/// Runs [`cache_memory`] in a process of its own (this benchmark again), so that the RSS it
/// prints is the caches' and a process's baseline only, not the generated fleet's.
fn measure_cache_memory_apart() {
    let measured = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .env("NOVADS_BENCH_ONLY", "cache-memory")
            .status()
    });
    match measured {
        Ok(status) if status.success() => {}
        other => panic!("measuring the caches' memory failed: {other:?}"),
    }
}

/// A record cache, listed once (empty), and its writer for what the watch sees next.
fn listed_records<R: Record>() -> (Records<R>, RecordsWriter<R>) {
    let (records, mut writer) = records::records();
    writer.apply(&watcher::Event::Init);
    writer.apply(&watcher::Event::InitDone);
    (records, writer)
}

/// A store holding `objects`, listed once, and its writer for what the watch sees next.
fn listed<K>(objects: impl IntoIterator<Item = K>) -> (Store<K>, Writer<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, writer)
}

fn store_of<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    listed(objects).0
}

/// A municipality's namespace, as its tenancy controller makes it (metadata: the cache of
/// namespaces holds metadata only).
fn namespace_of(municipality: &Municipality) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": municipality.namespace_name(), "ownerReferences": [{
            "apiVersion": "novads.io/v1alpha1", "kind": "Municipality",
            "name": municipality.metadata.name, "uid": municipality.metadata.uid, "controller": true
        }] }
    })
}

/// The controller's caches as the runtime's watches fill them: Municipalities, images,
/// namespaces and servers as the fleet has them (admission reads the servers' specs, which the
/// cold start does not change), the children empty; and the writers that the fake API's
/// writes reach.
fn caches(fleet: &Fleet) -> (Caches, Watches) {
    let (vms, vm_writer) = listed_records();
    let (vmis, vmi_writer) = listed_records();
    let (snapshots, snapshot_writer) = listed_records();
    let (services, service_writer) = listed_records();
    let (network_policies, policy_writer) = listed_records();
    let caches = Caches {
        municipalities: store_of(fleet.municipalities.iter().cloned()),
        images: store_of(fleet.images.iter().cloned()),
        servers: store_of(fleet.servers.iter().flatten().cloned()),
        servers_by_namespace: ServersByNamespace::of(fleet.servers.iter().flatten()),
        namespaces: store_of(
            fleet
                .municipalities
                .iter()
                .map(|m| from_json::<PartialObjectMeta<Namespace>>(namespace_of(m))),
        ),
        vms,
        vmis,
        snapshots,
        services,
        network_policies,
    };
    let watches = Watches {
        vms: vm_writer,
        vmis: vmi_writer,
        snapshots: snapshot_writer,
        services: service_writer,
        network_policies: policy_writer,
    };
    (caches, watches)
}

/// The runtime's watches of the children, without delay: every write of the fake API reaches
/// the store of its kind, decoded from its JSON as a watch event would be.
struct Watches {
    vms: RecordsWriter<VmRecord>,
    vmis: RecordsWriter<VmiRecord>,
    snapshots: RecordsWriter<SnapshotRecord>,
    services: RecordsWriter<ServiceRecord>,
    network_policies: RecordsWriter<NetworkPolicyRecord>,
}

impl Watches {
    /// `object` at `path` was written (`deleted`: removed).
    fn saw(&mut self, path: &str, object: &Value, deleted: bool) {
        fn event<K: for<'de> serde::Deserialize<'de>>(
            object: &Value,
            deleted: bool,
        ) -> Option<watcher::Event<K>> {
            let object = K::deserialize(object).ok()?;
            Some(if deleted {
                watcher::Event::Delete(object)
            } else {
                watcher::Event::Apply(object)
            })
        }
        if path.contains("/virtualmachines/") {
            if let Some(e) = event(object, deleted) {
                self.vms.apply(&e.modify(unchanged::record_live));
            }
        } else if path.contains("/virtualmachineinstances/") {
            if let Some(e) = event::<VirtualMachineInstance>(object, deleted) {
                self.vmis.apply(&e);
            }
        } else if path.contains("/virtualmachinesnapshots/") {
            if let Some(e) = event::<VirtualMachineSnapshot>(object, deleted) {
                self.snapshots.apply(&e);
            }
        } else if path.contains("/services/") {
            if let Some(e) = event(object, deleted) {
                self.services.apply(&e.modify(unchanged::record_live));
            }
        } else if path.contains("/networkpolicies/")
            && let Some(e) = event(object, deleted)
        {
            self.network_policies
                .apply(&e.modify(unchanged::record_live));
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> Timestamp {
    NOW.parse().expect("timestamp")
}

// ----------------------------------------------------------------------------------------------
// The generated fleet.

struct Fleet {
    municipalities: Vec<Municipality>,
    images: Vec<ServerImage>,
    /// Per municipality, its servers (without finalizer or status: as created).
    servers: Vec<Vec<VirtualServer>>,
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
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("generated object")
}

impl Fleet {
    fn generate(total: usize, count: usize) -> Self {
        let mut servers: Vec<Vec<VirtualServer>> = vec![Vec::new(); count];
        for (m, server) in fleet_servers(total, count) {
            servers[m].push(server);
        }
        Self {
            municipalities: (0..count).map(municipality).collect(),
            images: images(),
            servers,
        }
    }
}

fn image<'a>(images: &'a [ServerImage], name: &str) -> &'a ServerImage {
    images
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(name))
        .expect("image")
}

fn images() -> Vec<ServerImage> {
    vec![
        from_json(json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
            "metadata": { "name": "debian-12", "uid": uid("debian-12") },
            "spec": { "source": { "dataSource": { "name": "debian-12", "namespace": "novads-images" } },
                      "osFamily": "Linux", "version": "12", "supportEnd": "2028-06-30",
                      "lastPatched": "2025-05-01", "minDiskSize": "20Gi", "approved": true }
        })),
        from_json(json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
            "metadata": { "name": "rocky-9", "uid": uid("rocky-9") },
            "spec": { "source": { "http": "https://images.example.lv/rocky-9.qcow2" },
                      "osFamily": "Linux", "version": "9", "supportEnd": "2032-05-31",
                      "lastPatched": "2025-04-15", "minDiskSize": "10Gi", "approved": true }
        })),
        from_json(json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
            "metadata": { "name": "windows-2022", "uid": uid("windows-2022") },
            "spec": { "source": { "registry": "docker://registry.example.lv/windows:2022" },
                      "osFamily": "Windows", "version": "2022", "supportEnd": "2031-10-14",
                      "lastPatched": "2025-05-13", "minDiskSize": "64Gi", "approved": true }
        })),
    ]
}

fn municipality_code(m: usize) -> String {
    format!("m{m:03}")
}

/// Municipality number `m`.
fn municipality(m: usize) -> Municipality {
    let code = municipality_code(m);
    from_json(json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "Municipality",
        "metadata": { "name": code, "uid": uid(&code), "generation": 1 },
        "spec": {
            "code": code, "displayName": format!("Municipality {m}"), "realm": code,
            "quotas": { "cpu": 1000, "memory": "4Ti", "storage": "200Ti", "maxVirtualServers": 200 },
            "allowedNetworkRanges": [network(m, 0, 24)]
        }
    }))
}

/// The fleet's `total` servers spread over `count` municipalities, one at a time with the
/// number of their municipality (always the same ones: the generator is seeded).
fn fleet_servers(total: usize, count: usize) -> impl Iterator<Item = (usize, VirtualServer)> {
    let mut rng = Rng(0x7673_2d62_656e_6368);
    let per = total / count;
    (0..count)
        .flat_map(move |m| {
            let here = if m + 1 == count {
                total - per * (count - 1)
            } else {
                per
            };
            (0..here).map(move |n| (m, n))
        })
        .map(move |(m, n)| (m, generate_server(&mut rng, m, &municipality_code(m), n)))
}

fn generate_server(rng: &mut Rng, m: usize, code: &str, n: usize) -> VirtualServer {
    let image = ["debian-12", "rocky-9", "windows-2022"][rng.below(3)];
    let mut spec = json!({
        "image": image,
        "cpu": 1 + rng.below(8),
        "memory": format!("{}Gi", 1 + rng.below(16)),
        "ssh": { "authorizedKeys": [
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{:040} admin{n}@{code}", rng.next())
        ] }
    });
    let data: Vec<Value> = (0..rng.below(3))
        .map(
            |d| json!({ "name": format!("data{d}"), "size": format!("{}Gi", 10 + rng.below(200)) }),
        )
        .collect();
    if !data.is_empty() {
        spec["disks"] = json!({ "data": data });
    }
    if rng.below(3) == 0 {
        spec["expose"] = json!({ "serviceType": "ClusterIP", "ports": [
            { "port": 443, "allowedSources": [network(m, 0, 24)] },
            { "port": 22, "allowedSources": [network(m, 4 * rng.below(64), 30)] }
        ] });
    }
    if rng.below(2) == 0 {
        spec["backup"] = json!({ "schedule": "0 2 * * *", "retention": 7 });
    }
    if rng.below(4) == 0 {
        spec["maintenanceWindow"] =
            json!({ "days": ["Sat", "Sun"], "start": "02:00", "durationMinutes": 120 });
    }
    let tier = ["web", "db", "files"][n % 3];
    from_json(json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": {
            "name": format!("srv-{n:03}"), "namespace": format!("muni-{code}"),
            "uid": uid(&format!("{code}-{n}")), "generation": 1, "resourceVersion": "1",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": { "app": "municipal", "tier": tier }
        },
        "spec": spec
    }))
}

/// Municipality `m`'s VPN range `10.x.y.0/24`, or a subnet of it starting at `offset`.
fn network(m: usize, offset: usize, prefix: u8) -> String {
    format!("10.{}.{}.{offset}/{prefix}", m / 256 % 256, m % 256)
}

/// `body` as the API server holds it after the operator applied it: with the operator's
/// `Apply` entry in managedFields (what a real API server records), and the entry of the
/// KubeVirt controller that writes the status.
fn as_applied(mut body: Value) -> Value {
    let fields = unchanged::applied_field_set(&body);
    body["metadata"]["managedFields"] = json!([
        { "manager": "novads-operator", "operation": "Apply", "apiVersion": body["apiVersion"],
          "time": NOW, "fieldsType": "FieldsV1", "fieldsV1": fields },
    ]);
    body
}

/// What KubeVirt would show for a server's VM and instance once it runs.
fn running_vm(vm: &VirtualMachine) -> Value {
    let mut live = as_applied(serde_json::to_value(vm).expect("VM JSON"));
    live["metadata"]["managedFields"]
        .as_array_mut()
        .expect("entries")
        .push(json!({ "manager": "virt-controller", "operation": "Update", "apiVersion": "kubevirt.io/v1",
                      "time": NOW, "fieldsType": "FieldsV1", "subresource": "status",
                      "fieldsV1": { "f:status": { ".": {}, "f:created": {}, "f:printableStatus": {}, "f:ready": {} } } }));
    live["metadata"]["uid"] = json!(uid(&format!(
        "vm-{}",
        vm.metadata.name.as_deref().unwrap_or("")
    )));
    live["status"] = json!({ "printableStatus": "Running", "ready": true, "created": true });
    live
}

fn running_vmi(vm: &VirtualMachine, index: usize) -> Value {
    let domain = vm
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.domain).expect("domain"))
        .unwrap_or_else(|| json!({}));
    let labels = vm
        .spec
        .template
        .metadata
        .as_ref()
        .map(|m| serde_json::to_value(&m.labels).expect("labels"))
        .unwrap_or_else(|| json!({}));
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm.metadata.name, "namespace": vm.metadata.namespace,
            "uid": uid(&format!("vmi-{index}")), "labels": labels
        },
        "spec": { "domain": domain },
        "status": {
            "phase": "Running", "nodeName": format!("node-{}", index % 12),
            "interfaces": [{ "name": "default", "ipAddress": format!("10.244.{}.{}", index / 250, index % 250 + 2) }],
            "conditions": [{ "type": "Ready", "status": "True" }]
        }
    })
}

// ----------------------------------------------------------------------------------------------
// Memory of the caches.

/// `object` as a watch delivers it: encoded by the API server, decoded by the client into the
/// type the store holds (which keeps only the fields the operator reads).
fn as_watched<K: Serialize + serde::de::DeserializeOwned>(object: &K) -> K {
    let bytes = serde_json::to_vec(object).expect("encode");
    serde_json::from_slice(&bytes).expect("decode")
}

/// `object` as a reconcile reads it from the controller's caches: noted by the watch while it
/// has its managedFields, recorded, read back.
fn cached<R: Record>(object: &R::Object) -> R::Object
where
    R::Object: Clone + Serialize,
{
    let object = recorded(object.clone(), unchanged::record_live);
    let meta = kube::Resource::meta(&object);
    let (namespace, name) = (meta.namespace.as_deref(), meta.name.as_deref());
    R::record(&object)
        .expect("a converged child is kept")
        .object(namespace.unwrap_or_default(), name.unwrap_or_default())
}

/// `object` as the runtime's watch caches it: `record` run while it has its managedFields.
fn recorded<K>(mut object: K, record: fn(&mut K)) -> K {
    record(&mut object);
    object
}

/// Fills the controller's stores with a converged fleet, one kind after the other and one
/// object at a time (trimmed as the runtime's watches trim them), and prints the RSS after
/// each kind.
fn cache_memory(total: usize, count: usize) {
    let images = images();
    /// Feeds `apply` a listing of what `objects` makes of each converged server, generated one
    /// at a time and dropped after (the process holds the caches only).
    fn fill<K>(
        images: &[ServerImage],
        (total, count): (usize, usize),
        mut objects: impl FnMut(Case) -> Vec<K>,
        mut apply: impl FnMut(&watcher::Event<K>),
    ) {
        apply(&watcher::Event::Init);
        for (index, (_, server)) in fleet_servers(total, count).enumerate() {
            for object in objects(converged_case(images, &server, index + 1, 7)) {
                apply(&watcher::Event::InitApply(object));
            }
        }
        apply(&watcher::Event::InitDone);
    }
    let fleet = (total, count);
    let start = rss_kib();
    let mut last = start;
    let mut step = |what: &str, count: usize| {
        let now = rss_kib();
        println!(
            "  {count} {what}: +{:.1} MiB",
            kib_to_mib(now.saturating_sub(last))
        );
        last = now;
    };
    println!("memory of the VirtualServer controller's caches (RSS added per store):");
    let (municipalities, mut writer) = reflector::store::<Municipality>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for m in 0..count {
        let municipality = as_watched(&municipality(m));
        writer.apply_watcher_event(&watcher::Event::InitApply(municipality));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let images_cached = store_of(images.iter().map(as_watched));
    step(
        &format!("Municipalities and {} ServerImages", images_cached.len()),
        municipalities.len(),
    );
    let (namespaces, mut writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for m in 0..count {
        let namespace = as_watched(&from_json::<PartialObjectMeta<Namespace>>(namespace_of(
            &municipality(m),
        )));
        writer.apply_watcher_event(&watcher::Event::InitApply(namespace));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    step("namespaces (metadata)", namespaces.len());
    let (servers, mut writer) = reflector::store::<VirtualServer>();
    let by_namespace = ServersByNamespace::default();
    fill(
        &images,
        fleet,
        |case| {
            let mut server = as_watched(&case.server);
            trim_server(&mut server);
            vec![server]
        },
        |event| {
            writer.apply_watcher_event(event);
            by_namespace.apply(event);
        },
    );
    step(
        "VirtualServers (with status, trimmed) and their index",
        servers.len(),
    );
    let (vms, mut writer) = records::records::<VmRecord>();
    fill(
        &images,
        fleet,
        |case| vec![recorded(as_watched(&case.vm), unchanged::record_live)],
        |event| writer.apply(event),
    );
    step("VirtualMachines (records)", vms.len());
    let (vmis, mut writer) = records::records::<VmiRecord>();
    fill(
        &images,
        fleet,
        |case| vec![as_watched(&case.vmi)],
        |event| writer.apply(event),
    );
    step("VirtualMachineInstances (records)", vmis.len());
    let (snapshots, mut writer) = records::records::<SnapshotRecord>();
    fill(
        &images,
        fleet,
        |case| case.snapshots.iter().map(as_watched).collect(),
        |event| writer.apply(event),
    );
    step(
        "VirtualMachineSnapshots (a week for each server with backups, records)",
        snapshots.len(),
    );
    let (services, mut writer) = records::records::<ServiceRecord>();
    fill(
        &images,
        fleet,
        |case| {
            let service = case.service.as_ref().map(as_watched);
            service
                .map(|s| recorded(s, unchanged::record_live))
                .into_iter()
                .collect()
        },
        |event| writer.apply(event),
    );
    step("Services (records)", services.len());
    let (policies, mut writer) = records::records::<NetworkPolicyRecord>();
    fill(
        &images,
        fleet,
        |case| {
            let policy = case.network_policy.as_ref().map(as_watched);
            policy
                .map(|p| recorded(p, unchanged::record_live))
                .into_iter()
                .collect()
        },
        |event| writer.apply(event),
    );
    step("NetworkPolicies (records)", policies.len());
    println!(
        "RSS with the VirtualServer controller's caches of {} servers in {} namespaces: {:.1} \
         MiB (before filling them {:.1} MiB, delta {:.1} MiB; peak {:.1} MiB); target < 64 MiB",
        servers.len(),
        namespaces.len(),
        kib_to_mib(last),
        kib_to_mib(start),
        kib_to_mib(last.saturating_sub(start)),
        kib_to_mib(peak_kib()),
    );
}

/// A uid as the API server gives one (a random UUID, 36 characters), derived from `seed` so that
/// runs are repeatable: shorter made-up uids would make the caches look smaller than a
/// cluster's.
fn uid(seed: &str) -> String {
    use sha2::Digest;
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

// ----------------------------------------------------------------------------------------------
// Build + diff of converged servers.

struct Case {
    server: VirtualServer,
    image: ServerImage,
    vm: VirtualMachine,
    vmi: VirtualMachineInstance,
    snapshots: Vec<VirtualMachineSnapshot>,
    service: Option<Service>,
    network_policy: Option<NetworkPolicy>,
}

/// Server number `index` as a converged reconcile leaves it: with finalizer and status, its
/// children applied by the operator (stamped, see `controller::unchanged`) and filled in by
/// the API server and KubeVirt, and `backups` daily snapshots if it has a backup schedule.
fn converged_case(
    images: &[ServerImage],
    server: &VirtualServer,
    index: usize,
    backups: usize,
) -> Case {
    let now = now();
    let mut server = server.clone();
    server.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    let image = image(images, &server.spec.image);
    let size = server
        .spec
        .disks
        .system_size
        .clone()
        .unwrap_or_else(|| image.spec.min_disk_size.clone());
    let vm = build::virtual_machine(&server, image, &size).expect("VM builds");
    let secret = build::cloud_init_secret(&server, None).expect("secret builds");
    let vm = unchanged::stamped(vm, &[&secret]);
    let vmi: VirtualMachineInstance = from_json(running_vmi(&vm, index));
    let vm: VirtualMachine = from_json(running_vm(&vm));
    let snapshots = if server.spec.backup.is_some() {
        (0..backups)
            .map(|day| {
                let last: Timestamp = "2025-06-02T02:00:00Z".parse().expect("time");
                let at = last
                    .checked_sub(SignedDuration::from_hours(24 * day as i64))
                    .expect("time");
                let time = at.to_string();
                let mut snapshot =
                    serde_json::to_value(build::snapshot(&server, at).expect("snapshot"))
                        .expect("JSON");
                snapshot["metadata"]["creationTimestamp"] = json!(time);
                snapshot["status"] =
                    json!({ "readyToUse": true, "creationTime": time, "phase": "Succeeded" });
                from_json(snapshot)
            })
            .collect()
    } else {
        Vec::new()
    };
    let service = build::service(&server).expect("service").map(|s| {
        let mut live = as_applied(serde_json::to_value(unchanged::stamped(s, &[])).expect("JSON"));
        live["metadata"]["uid"] = json!(uid(&format!("service-{index}")));
        live["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", index / 250, index % 250));
        live["spec"]["clusterIPs"] = json!([format!("10.96.{}.{}", index / 250, index % 250)]);
        live["spec"]["ipFamilies"] = json!(["IPv4"]);
        live["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        live["spec"]["sessionAffinity"] = json!("None");
        live["status"] = json!({ "loadBalancer": {} });
        from_json(live)
    });
    let network_policy = build::network_policy(&server).expect("policy").map(|p| {
        let mut live = as_applied(serde_json::to_value(unchanged::stamped(p, &[])).expect("JSON"));
        live["metadata"]["uid"] = json!(uid(&format!("policy-{index}")));
        from_json(live)
    });
    let observed = Observed {
        vm: Some(&vm),
        vmi: Some(&vmi),
        snapshots: &snapshots,
        service: service.as_ref(),
    };
    server.status = Some(status::next_status(&server, &observed, &[], now));
    Case {
        server,
        image: image.clone(),
        vm,
        vmi,
        snapshots,
        service,
        network_policy,
    }
}

fn converged_cases(fleet: &Fleet) -> Vec<(Observations, Vec<Case>)> {
    let mut index = 0;
    let mut namespaces = Vec::new();
    for (municipality, servers) in fleet.municipalities.iter().zip(&fleet.servers) {
        let mut cases = Vec::new();
        for server in servers {
            index += 1;
            cases.push(converged_case(&fleet.images, server, index, 1));
        }
        let base = Observations {
            municipality: Some(municipality.clone()),
            siblings: cases.iter().map(|c| c.server.clone()).collect(),
            ..Observations::default()
        };
        namespaces.push((base, cases));
    }
    namespaces
}

/// What a converged reconcile computes; returns the bytes of the apply bodies (kept alive
/// through `black_box`).
fn noop_reconcile(seen: &Observations, case: &Case, now: Timestamp) -> usize {
    let server = &case.server;
    let handled = server
        .status
        .as_ref()
        .and_then(|s| s.restart_handled.as_deref());
    let desired = match controller::plan(server, seen, handled, now) {
        Plan::Apply(desired) => desired,
        other => panic!("a converged server is admitted and builds: {other:?}"),
    };
    assert!(
        desired
            .backup
            .as_ref()
            .is_none_or(|b| b.snapshot.is_none() && b.prune.is_empty()),
        "no backup is due"
    );
    // With the caches, each child is compared with its cached object instead of applied.
    let vm = unchanged::stamped(desired.vm.clone(), &[&desired.cloud_init]);
    assert!(
        unchanged::is_current(seen.vm.as_ref(), &vm),
        "the VM is current"
    );
    let mut bytes = body(&vm);
    if let Some(service) = &desired.service {
        let service = unchanged::stamped(service.clone(), &[]);
        assert!(unchanged::is_current(seen.service.as_ref(), &service));
        bytes += body(&service);
    }
    if let Some(policy) = &desired.network_policy {
        let policy = unchanged::stamped(policy.clone(), &[]);
        assert!(unchanged::is_current(seen.network_policy.as_ref(), &policy));
        bytes += body(&policy);
    }
    let next = status::next_status(
        server,
        &Observed {
            vm: seen.vm.as_ref(),
            vmi: seen.vmi.as_ref(),
            snapshots: &seen.snapshots,
            service: seen.service.as_ref(),
        },
        &[],
        now,
    );
    assert!(
        server.status.as_ref() == Some(&next),
        "a converged server writes no status"
    );
    bytes
}

/// Serialised as kube's `Patch::Apply` does.
fn body<K: Serialize>(object: &K) -> usize {
    black_box(serde_json::to_vec(object).expect("serialise")).len()
}

fn build_and_diff(fleet: &Fleet, passes: usize) {
    let mut namespaces = converged_cases(fleet);
    let now = now();
    let count: usize = namespaces.iter().map(|(_, cases)| cases.len()).sum();
    let namespaces_count = namespaces.len();
    let mut wall = Vec::with_capacity(passes * count);
    let mut cpu = Duration::ZERO;
    for pass in 0..WARMUP_PASSES + passes {
        for (seen, cases) in &mut namespaces {
            for case in cases.iter() {
                // Not timed: putting this server's observations in place.
                seen.image = Some(case.image.clone());
                seen.vm = Some(cached::<VmRecord>(&case.vm));
                seen.vmi = Some(cached::<VmiRecord>(&case.vmi));
                seen.snapshots = case
                    .snapshots
                    .iter()
                    .map(cached::<SnapshotRecord>)
                    .collect();
                seen.service = case.service.as_ref().map(cached::<ServiceRecord>);
                seen.network_policy = case
                    .network_policy
                    .as_ref()
                    .map(cached::<NetworkPolicyRecord>);
                let cpu_before = process_cpu();
                let started = Instant::now();
                black_box(noop_reconcile(seen, case, now));
                let elapsed = started.elapsed();
                let used = process_cpu().saturating_sub(cpu_before);
                if pass >= WARMUP_PASSES {
                    wall.push(elapsed);
                    cpu += used;
                }
            }
        }
    }
    wall.sort();
    let n = wall.len().max(1);
    let mean = wall.iter().sum::<Duration>() / n as u32;
    let at = |percent: usize| wall[(n * percent / 100).min(n - 1)];
    println!(
        "build + diff of a converged VirtualServer ({count} servers, {namespaces_count} per-namespace \
         sibling lists of ~{} servers): mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs \
         (wall clock, one thread); process CPU {:.1} µs per server; target < 2000 µs",
        count / namespaces_count,
        micros(mean),
        micros(at(50)),
        micros(at(99)),
        micros(wall[n - 1]),
        micros(cpu / n as u32),
    );
}

// ----------------------------------------------------------------------------------------------
// Cold start against an in-process API.

/// An API server in memory that answers at once and plays KubeVirt.
#[derive(Default)]
struct FakeApi {
    objects: BTreeMap<String, Value>,
    version: u64,
    requests: u64,
    /// The controller's caches of the children, when it has them.
    watches: Option<Watches>,
    /// CPU time the fake API itself spent (decoding requests, storing, encoding responses,
    /// feeding the caches), measured on the threads that ran it.
    cpu: Duration,
}

fn respond(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(value).expect("JSON")))
        .expect("response")
}

fn status_of(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": if code < 300 { "Success" } else { "Failure" },
            "reason": reason, "code": code, "metadata": {} })
}

/// `patch` merged into `target` (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` (after `/api/v1` or `/apis/group/version`) names a collection.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    rest.len() == 1 || (rest.len() == 3 && rest[0] == "namespaces")
}

impl FakeApi {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn resource_version(&self, path: &str) -> Option<String> {
        self.objects.get(path).and_then(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        })
    }

    fn insert(&mut self, path: String, mut object: Value) {
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        if let Some(watches) = self.watches.as_mut() {
            watches.saw(&path, &object, false);
        }
        self.objects.insert(path, object);
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> Response<Body> {
        self.requests += 1;
        match *method {
            Method::GET if is_collection(path) => self.list(path, query),
            Method::GET => match self.objects.get(path) {
                Some(object) => respond(200, object),
                None => respond(404, &status_of(404, "NotFound")),
            },
            Method::PATCH => self.patch(path, content_type, body),
            Method::POST if path.ends_with("/events") => respond(201, &body),
            Method::POST => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = format!("{path}/{name}");
                if self.objects.contains_key(&key) {
                    return respond(409, &status_of(409, "AlreadyExists"));
                }
                let mut object = body;
                object["metadata"]["creationTimestamp"] = json!(NOW);
                // KubeVirt snapshots at once.
                object["status"] =
                    json!({ "readyToUse": true, "creationTime": NOW, "phase": "Succeeded" });
                self.insert(key.clone(), object);
                respond(201, &self.objects[&key])
            }
            Method::PUT => respond(202, &json!({})),
            Method::DELETE => match self.objects.remove(path) {
                Some(object) => {
                    if let Some(watches) = self.watches.as_mut() {
                        watches.saw(path, &object, true);
                    }
                    respond(200, &status_of(200, "Deleted"))
                }
                None => respond(404, &status_of(404, "NotFound")),
            },
            _ => respond(405, &status_of(405, "MethodNotAllowed")),
        }
    }

    fn list(&self, path: &str, query: &str) -> Response<Body> {
        let selector: Vec<(String, String)> = query
            .split('&')
            .find_map(|part| part.strip_prefix("labelSelector="))
            .map(percent_decode)
            .map(|s| {
                s.split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = format!("{path}/");
        let items: Vec<&Value> = self
            .objects
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter(|(key, _)| !key[prefix.len()..].contains('/'))
            .map(|(_, object)| object)
            .filter(|object| {
                selector
                    .iter()
                    .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v.as_str()))
            })
            .collect();
        respond(
            200,
            &json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": self.version.to_string() }, "items": items }),
        )
    }

    fn patch(&mut self, path: &str, content_type: &str, body: Value) -> Response<Body> {
        if let Some(owner) = path.strip_suffix("/status") {
            let Some(object) = self.objects.get_mut(owner) else {
                return respond(404, &status_of(404, "NotFound"));
            };
            // A status apply by its only writer: the applied status is the whole status.
            object["status"] = body["status"].clone();
            let object = object.clone();
            self.insert(owner.to_string(), object);
            return respond(200, &self.objects[owner]);
        }
        if content_type.contains("apply-patch") {
            // The operator is the only manager of these objects: it owns what it applies.
            let mut object = as_applied(body);
            match self.objects.get(path) {
                Some(existing) => {
                    object["metadata"]["uid"] = existing["metadata"]["uid"].clone();
                    object["metadata"]["creationTimestamp"] =
                        existing["metadata"]["creationTimestamp"].clone();
                    if let Some(status) = existing.get("status") {
                        object["status"] = status.clone();
                    }
                    // An unchanged apply keeps the resourceVersion.
                    let mut unchanged = existing.clone();
                    merge_patch(&mut unchanged, &object);
                    if unchanged == *existing {
                        return respond(200, existing);
                    }
                }
                None => {
                    object["metadata"]["uid"] =
                        json!(uid(&format!("created-{}", self.version + 1)));
                    object["metadata"]["creationTimestamp"] = json!(NOW);
                    if object["kind"] == "VirtualMachine" {
                        self.start(path, &object);
                        object["status"] =
                            json!({ "printableStatus": "Running", "ready": true, "created": true });
                    }
                }
            }
            self.insert(path.to_string(), object);
            return respond(200, &self.objects[path]);
        }
        let Some(object) = self.objects.get_mut(path) else {
            return respond(404, &status_of(404, "NotFound"));
        };
        merge_patch(object, &body);
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let object = object.clone();
        self.insert(path.to_string(), object);
        respond(200, &self.objects[path])
    }

    /// KubeVirt starts a new VM at once: its instance runs with the VM's template.
    fn start(&mut self, vm_path: &str, vm: &Value) {
        let Ok(vm) = VirtualMachine::deserialize(vm) else {
            return;
        };
        let index = self.version as usize;
        let vmi = running_vmi(&vm, index);
        let path = vm_path.replace("/virtualmachines/", "/virtualmachineinstances/");
        self.insert(path, vmi);
    }
}

fn server_path(namespace: &str, name: &str) -> String {
    format!("/apis/novads.io/v1alpha1/namespaces/{namespace}/virtualservers/{name}")
}

fn cold_start(fleet: &Fleet, cached: bool) {
    let mut api = FakeApi::default();
    for image in &fleet.images {
        let name = image.metadata.name.clone().unwrap_or_default();
        api.insert(
            format!("/apis/novads.io/v1alpha1/serverimages/{name}"),
            serde_json::to_value(image).expect("JSON"),
        );
    }
    let mut keys = Vec::new();
    for (municipality, servers) in fleet.municipalities.iter().zip(&fleet.servers) {
        let name = municipality.metadata.name.clone().unwrap_or_default();
        let namespace = municipality.namespace_name();
        api.insert(
            format!("/apis/novads.io/v1alpha1/municipalities/{name}"),
            serde_json::to_value(municipality).expect("JSON"),
        );
        api.insert(
            format!("/api/v1/namespaces/{namespace}"),
            namespace_of(municipality),
        );
        for server in servers {
            let path = server_path(
                &namespace,
                &server.metadata.name.clone().unwrap_or_default(),
            );
            api.insert(path.clone(), serde_json::to_value(server).expect("JSON"));
            keys.push(path);
        }
    }
    let caches = cached.then(|| {
        let (caches, watches) = caches(fleet);
        api.watches = Some(watches);
        caches
    });
    let api = Arc::new(Mutex::new(api));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let service = {
            let api = api.clone();
            tower::service_fn(move |request: Request<Body>| {
                let api = api.clone();
                async move {
                    let method = request.method().clone();
                    let path = request.uri().path().to_string();
                    let query = request.uri().query().unwrap_or_default().to_string();
                    let content_type = request
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let bytes = request
                        .into_body()
                        .collect_bytes()
                        .await
                        .unwrap_or_default();
                    let started = thread_cpu();
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let response = match api.lock() {
                        Ok(mut api) => {
                            let response = api.handle(&method, &path, &query, &content_type, body);
                            api.cpu += thread_cpu().saturating_sub(started);
                            response
                        }
                        Err(_) => respond(500, &status_of(500, "Poisoned")),
                    };
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let client = kube::Client::new(service, "default");
        let reporter = Reporter {
            controller: "novads-operator".into(),
            instance: Some("bench".into()),
        };
        let fixed = now();
        let mut ctx = Context::new(client, reporter).with_clock(move || fixed);
        if let Some(caches) = caches {
            ctx = ctx.with_caches(caches);
        }
        let ctx = Arc::new(ctx);

        let cpu_before = process_cpu();
        let started = Instant::now();
        let mut pending = keys.clone();
        let mut rounds = Vec::new();
        let mut reconciles = 0usize;
        let mut errors = 0usize;
        while !pending.is_empty() && rounds.len() < 10 {
            rounds.push(pending.len());
            let results = reconcile_all(&api, &ctx, pending).await;
            reconciles += results.len();
            errors += results.iter().filter(|(_, _, failed)| *failed).count();
            pending = results
                .into_iter()
                .filter_map(|(path, changed, _)| changed.then_some(path))
                .collect();
        }
        let wall = started.elapsed();
        let cpu = process_cpu().saturating_sub(cpu_before);
        assert!(pending.is_empty(), "converged within 10 rounds: {rounds:?}");
        let (requests, api_cpu) = {
            let api = api.lock().expect("api");
            (api.requests, api.cpu)
        };

        // One more round over the converged fleet: what a resync costs.
        let cpu_before = process_cpu();
        let started = Instant::now();
        let count = keys.len();
        let steady = reconcile_all(&api, &ctx, keys).await;
        let steady_wall = started.elapsed();
        let steady_cpu = process_cpu().saturating_sub(cpu_before);
        let steady_changed = steady.iter().filter(|(_, changed, _)| *changed).count();
        let api = api.lock().expect("api");
        let steady_requests = api.requests - requests;
        let vms = api
            .objects
            .keys()
            .filter(|k| k.contains("/virtualmachines/"))
            .count();
        let snapshots = api
            .objects
            .keys()
            .filter(|k| k.contains("/virtualmachinesnapshots/"))
            .count();
        let servers: usize = fleet.servers.iter().map(Vec::len).sum();
        assert_eq!(vms, servers, "every server has its VM");
        let reads = if cached {
            "everything from the caches"
        } else {
            "everything from the API"
        };
        println!(
            "cold start of {servers} VirtualServers in {} namespaces ({reads}): converged in \
             {:.2} s ({} reconciles in {} rounds {rounds:?}, {:.0} reconciles/s, {requests} API \
             requests, {errors} errors; {vms} VMs, {snapshots} snapshots); process CPU {:.2} s, \
             {:.0} µs per reconcile (reconciler + kube client + the fake API), of which the \
             fake API {:.2} s and the controller with its kube client {:.2} s ({:.0} µs per \
             reconcile); concurrency {CONCURRENCY}; target < 10 s",
            fleet.municipalities.len(),
            wall.as_secs_f64(),
            reconciles,
            rounds.len(),
            reconciles as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64(),
            micros(cpu / reconciles.max(1) as u32),
            api_cpu.as_secs_f64(),
            cpu.saturating_sub(api_cpu).as_secs_f64(),
            micros(cpu.saturating_sub(api_cpu) / reconciles.max(1) as u32),
        );
        println!(
            "  then a converged round ({reads}): {count} reconciles in {:.2} s, {steady_requests} \
             API requests, {steady_changed} servers changed; process CPU {:.0} µs per reconcile",
            steady_wall.as_secs_f64(),
            micros(steady_cpu / count.max(1) as u32),
        );
    });
}

/// Reconciles the servers at `paths`, [`CONCURRENCY`] at a time; per server, whether the
/// reconcile changed it (or failed), and whether it failed.
async fn reconcile_all(
    api: &Arc<Mutex<FakeApi>>,
    ctx: &Arc<Context>,
    paths: Vec<String>,
) -> Vec<(String, bool, bool)> {
    futures::stream::iter(paths)
        .map(|path| {
            let api = api.clone();
            let ctx = ctx.clone();
            async move {
                let (server, before) = {
                    let api = api.lock().expect("api");
                    let server = VirtualServer::deserialize(&api.objects[&path]).expect("server");
                    (server, api.resource_version(&path))
                };
                // On a task of its own, as the runtime's watch runs it (`watch::on_worker`).
                let result = on_worker(controller::reconcile(Arc::new(server), ctx)).await;
                let after = api.lock().expect("api").resource_version(&path);
                (path, result.is_err() || before != after, result.is_err())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

// ----------------------------------------------------------------------------------------------
// Measuring.

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

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes into the zeroed struct we own; the clock id is valid.
    let time = unsafe {
        let mut time: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time);
        time
    };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// A line of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field of /proc/self/status")
}

/// Resident set size now.
fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// The highest resident set size so far.
fn peak_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
