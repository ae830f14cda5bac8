//! The pure VirtualServer builders (`novads_operator::virtual_server::build`):
//!
//! - golden files under tests/golden/virtual-server/ (regenerate with
//!   `NOVADS_BLESS=1 cargo nextest run -p novads-operator --test virtual_server_build` and review
//!   the diff: it is exactly what changes on every cluster);
//! - every generated VirtualMachine, DataVolume template and VirtualMachineSnapshot validated
//!   against the published schemas vendored in tests/schemas/, plus the apiVersion, kind and
//!   metadata those schemas leave out, and a mutation test proving the validation can fail;
//! - what the golden files let reach each server is exactly its declared `spec.expose`, with
//!   the tenancy's policies of tests/golden/ (`novads_operator::exposure`);
//! - bad input refused with the precise error;
//! - the cloud-init user data parsed back as YAML and MIME.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use novads_crds::{Restore, ServerImage, VirtualServer};
use novads_operator::exposure::{self, ServerPod};
use novads_operator::kubevirt::{VirtualMachine, VirtualMachineSnapshot};
use novads_operator::virtual_server::build::{self, BuildError};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const IMAGES: &str = r#"
apiVersion: novads.io/v1alpha1
kind: ServerImage
metadata: {name: debian-12, uid: 11111111-1111-1111-1111-111111111111}
spec:
  source: {dataSource: {name: debian-12, namespace: novads-images}}
  osFamily: Linux
  version: "12"
  supportEnd: "2028-06-30"
  lastPatched: "2026-11-01"
  minDiskSize: 20Gi
  approved: true
---
apiVersion: novads.io/v1alpha1
kind: ServerImage
metadata: {name: rocky-9, uid: 22222222-2222-2222-2222-222222222222}
spec:
  source: {http: "https://images.example.lv/rocky-9-genericcloud.qcow2"}
  osFamily: Linux
  version: "9"
  supportEnd: "2032-05-31"
  lastPatched: "2026-10-15"
  minDiskSize: 10Gi
  approved: true
---
apiVersion: novads.io/v1alpha1
kind: ServerImage
metadata: {name: fedora-41, uid: 33333333-3333-3333-3333-333333333333}
spec:
  source: {registry: "docker://quay.io/containerdisks/fedora:41"}
  osFamily: Linux
  version: "41"
  supportEnd: "2026-12-15"
  lastPatched: "2026-11-20"
  minDiskSize: 8Gi
  approved: true
"#;

/// Everything at once: DataSource image, data disks, SSH keys (one with a non-ASCII comment),
/// tenant cloud-config that tries to re-enable password login, a LoadBalancer with IPv4 and
/// IPv6 sources, snapshots deleted with the server.
const WEB: &str = r#"
apiVersion: novads.io/v1alpha1
kind: VirtualServer
metadata: {name: web, namespace: muni-talsi, uid: aaaaaaaa-0000-0000-0000-000000000001}
spec:
  image: debian-12
  cpu: 4
  memory: 8Gi
  disks:
    systemSize: 40Gi
    storageClass: ceph-block
    data:
      - {name: data, size: 100Gi, storageClass: ceph-block-ssd}
      - {name: logs, size: 20Gi}
  runStrategy: Running
  ssh:
    authorizedKeys:
      - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtalsiJanaKey0000000000000000000000000000 jana@talsi"
      - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJanisKey11111111111111111111111111111111 jānis@talsi: laptop #2"
  cloudInit: {secretRef: {name: web-user-data}}
  expose:
    serviceType: LoadBalancer
    ports:
      - {port: 443, allowedSources: ["10.20.0.0/16", "192.0.2.0/24"]}
      - {port: 51820, protocol: UDP, allowedSources: ["2001:db8:20::/48"]}
  backup: {schedule: "0 2 * * *", retention: 14, onDelete: Delete}
"#;

const WEB_TENANT_USER_DATA: &str = "#cloud-config
packages: [nginx, postgresql]
ssh_pwauth: true
users:
  - name: intruder
    lock_passwd: false
    plain_text_passwd: hunter2
runcmd:
  - [systemctl, enable, --now, nginx]
";

/// HTTP image, ClusterIP, snapshots kept, manual start, a shell-script user data.
const DB: &str = r#"
apiVersion: novads.io/v1alpha1
kind: VirtualServer
metadata: {name: db, namespace: muni-limbazi, uid: aaaaaaaa-0000-0000-0000-000000000002}
spec:
  image: rocky-9
  cpu: 2
  memory: 4Gi
  disks:
    data: [{name: pgdata, size: 200Gi}]
  runStrategy: Manual
  ssh: {authorizedKeys: ["ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBdb= dba@limbazi"]}
  cloudInit: {secretRef: {name: db-user-data}}
  expose:
    serviceType: ClusterIP
    ports:
      - {port: 5432, protocol: TCP, allowedSources: ["10.30.4.0/24"]}
  backup: {schedule: "@daily", onDelete: Retain}
"#;

const DB_TENANT_USER_DATA: &str = "#!/bin/sh\necho 'tuned for PostgreSQL' > /etc/motd\n";

/// Registry image, halted, tenant user data that is a MIME message of its own.
const CI: &str = r#"
apiVersion: novads.io/v1alpha1
kind: VirtualServer
metadata: {name: ci, namespace: muni-ventspils, uid: aaaaaaaa-0000-0000-0000-000000000003}
spec:
  image: fedora-41
  cpu: 8
  memory: 16Gi
  runStrategy: Halted
  backup: {schedule: "@weekly"}
"#;

const CI_TENANT_USER_DATA: &str = "Content-Type: multipart/mixed; boundary=\"tenant\"
MIME-Version: 1.0

--tenant
Content-Type: text/cloud-config

packages: [podman]
--tenant
Content-Type: text/x-shellscript

#!/bin/sh
podman pull registry.example.lv/ci/runner
--tenant--
";

/// Only what is required.
const TINY: &str = r#"
apiVersion: novads.io/v1alpha1
kind: VirtualServer
metadata: {name: tiny, namespace: muni-talsi, uid: aaaaaaaa-0000-0000-0000-000000000004}
spec: {image: fedora-41, cpu: 1, memory: 1Gi}
"#;

struct Case {
    file: &'static str,
    server: &'static str,
    tenant_user_data: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        file: "web-full",
        server: WEB,
        tenant_user_data: Some(WEB_TENANT_USER_DATA),
    },
    Case {
        file: "db-clusterip-retain",
        server: DB,
        tenant_user_data: Some(DB_TENANT_USER_DATA),
    },
    Case {
        file: "ci-registry-halted",
        server: CI,
        tenant_user_data: Some(CI_TENANT_USER_DATA),
    },
    Case {
        file: "tiny-minimal",
        server: TINY,
        tenant_user_data: None,
    },
];

fn server(yaml: &str) -> VirtualServer {
    serde_saphyr::from_str(yaml).expect("fixture VirtualServer")
}

fn images() -> Vec<ServerImage> {
    serde_saphyr::from_multiple(IMAGES).expect("fixture ServerImages")
}

fn image_for(server: &VirtualServer) -> ServerImage {
    images()
        .into_iter()
        .find(|image| image.metadata.name.as_deref() == Some(server.spec.image.as_str()))
        .expect("fixture image")
}

fn system_size(server: &VirtualServer, image: &ServerImage) -> Quantity {
    // The decision logic picks max(systemSize, minDiskSize); here the fixtures keep it simple.
    server
        .spec
        .disks
        .system_size
        .clone()
        .unwrap_or_else(|| image.spec.min_disk_size.clone())
}

fn snapshot_time() -> Timestamp {
    "2026-11-26T02:00:41Z".parse().expect("timestamp")
}

/// Every object of a case, as JSON, in apply order.
struct Built {
    secret: Value,
    vm: Value,
    service: Option<Value>,
    policy: Option<Value>,
    snapshot: Value,
    user_data: String,
}

fn build_case(case: &Case) -> Built {
    let server = server(case.server);
    let image = image_for(&server);
    let secret = build::cloud_init_secret(&server, case.tenant_user_data).expect(case.file);
    let user_data = secret
        .data
        .as_ref()
        .and_then(|data| data.get(build::USER_DATA_KEY))
        .map(|bytes| String::from_utf8(bytes.0.clone()).expect("UTF-8 user data"))
        .expect("userdata key");
    let vm =
        build::virtual_machine(&server, &image, &system_size(&server, &image)).expect(case.file);
    Built {
        secret: to_value(&secret),
        vm: to_value(&vm),
        service: build::service(&server)
            .expect(case.file)
            .map(|s| to_value(&s)),
        policy: build::network_policy(&server)
            .expect(case.file)
            .map(|p| to_value(&p)),
        snapshot: to_value(&build::snapshot(&server, snapshot_time()).expect(case.file)),
        user_data,
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serialise")
}

// ---------------------------------------------------------------------------------------------
// Golden files
// ---------------------------------------------------------------------------------------------

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/virtual-server")
}

fn render_case(built: &Built) -> String {
    let mut objects = vec![&built.secret, &built.vm];
    objects.extend(built.service.iter());
    objects.extend(built.policy.iter());
    objects.push(&built.snapshot);
    objects
        .into_iter()
        .map(|object| format!("---\n{}", serde_saphyr::to_string(object).expect("YAML")))
        .collect()
}

#[test]
fn built_objects_equal_their_golden_files() {
    let bless = std::env::var_os("NOVADS_BLESS").is_some_and(|value| value == "1");
    let dir = golden_dir();
    let mut stale = Vec::new();
    for case in CASES {
        let built = build_case(case);
        // The objects, and the Secret's user data decoded, for review.
        for (path, text) in [
            (dir.join(format!("{}.yaml", case.file)), render_case(&built)),
            (dir.join(format!("{}.userdata", case.file)), built.user_data),
        ] {
            if bless {
                std::fs::create_dir_all(&dir).expect("golden directory");
                std::fs::write(&path, &text).expect("write golden file");
            } else if std::fs::read_to_string(&path).unwrap_or_default() != text {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "built objects differ from {stale:?}\n\
         regenerate with: NOVADS_BLESS=1 cargo nextest run -p novads-operator --test virtual_server_build"
    );
}

// ---------------------------------------------------------------------------------------------
// Schema validation
// ---------------------------------------------------------------------------------------------

struct Schemas {
    vm: jsonschema::Validator,
    dv: jsonschema::Validator,
    snapshot: jsonschema::Validator,
    restore: jsonschema::Validator,
}

fn schemas() -> Schemas {
    let load = |file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/schemas")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text).expect("schema JSON");
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    Schemas {
        vm: load("kubevirt.io/virtualmachine_v1.json"),
        dv: load("cdi.kubevirt.io/datavolume_v1beta1.json"),
        snapshot: load("snapshot.kubevirt.io/virtualmachinesnapshot_v1beta1.json"),
        restore: load("snapshot.kubevirt.io/virtualmachinerestore_v1beta1.json"),
    }
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors = errors(validator, instance);
    assert!(
        errors.is_empty(),
        "{what} is invalid:\n{}",
        errors.join("\n")
    );
}

/// What the schemas leave out: apiVersion, kind and a name that is a DNS subdomain (and, where
/// given, a namespace that is a DNS label).
fn assert_type_and_name(object: &Value, api_version: &str, kind: &str, max_name: usize) {
    assert_eq!(object["apiVersion"], api_version, "{object}");
    assert_eq!(object["kind"], kind, "{object}");
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    assert!(
        is_dns_subdomain(name, max_name),
        "{kind} name {name:?} is not a valid name of at most {max_name} characters"
    );
    if let Some(namespace) = object["metadata"].get("namespace") {
        let namespace = namespace.as_str().expect("namespace string");
        assert!(is_dns_subdomain(namespace, 63) && !namespace.contains('.'));
    }
    for (key, value) in object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let value = value.as_str().expect("label value");
        assert!(value.len() <= 63, "label {key}={value} is too long");
    }
}

fn is_dns_subdomain(name: &str, max: usize) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
}

/// A dataVolumeTemplate as the DataVolume KubeVirt creates from it.
fn as_data_volume(template: &Value) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": template["metadata"],
        "spec": template["spec"],
    })
}

/// KubeVirt's run strategies; the schema leaves the field a plain string.
const RUN_STRATEGIES: &[&str] = &["Always", "RerunOnFailure", "Manual", "Halted", "Once"];

#[test]
fn every_generated_object_is_valid_against_the_published_schemas() {
    let schemas = schemas();
    let mut data_volumes = 0;
    for case in CASES {
        let built = build_case(case);
        let what = case.file;

        assert_valid(&schemas.vm, &built.vm, what);
        assert_type_and_name(&built.vm, "kubevirt.io/v1", "VirtualMachine", 63);
        let run_strategy = built.vm["spec"]["runStrategy"]
            .as_str()
            .expect("runStrategy");
        assert!(RUN_STRATEGIES.contains(&run_strategy), "{run_strategy}");
        assert!(
            built.vm["spec"].get("running").is_none(),
            "running and runStrategy exclude each other"
        );

        let templates = built.vm["spec"]["dataVolumeTemplates"]
            .as_array()
            .expect("dataVolumeTemplates");
        for template in templates {
            let dv = as_data_volume(template);
            assert_valid(
                &schemas.dv,
                &dv,
                &format!("{what}: {}", template["metadata"]["name"]),
            );
            // CDI refuses DataVolume names longer than a DNS label.
            assert_type_and_name(&dv, "cdi.kubevirt.io/v1beta1", "DataVolume", 63);
            let spec = &dv["spec"];
            assert!(
                spec.get("source").is_some() != spec.get("sourceRef").is_some(),
                "exactly one of source and sourceRef: {spec}"
            );
            data_volumes += 1;
        }

        assert_valid(&schemas.snapshot, &built.snapshot, what);
        assert_type_and_name(
            &built.snapshot,
            "snapshot.kubevirt.io/v1beta1",
            "VirtualMachineSnapshot",
            253,
        );
        assert_eq!(
            built.snapshot["spec"]["source"]["name"],
            built.vm["metadata"]["name"]
        );
        assert_eq!(built.snapshot["spec"]["source"]["apiGroup"], "kubevirt.io");
        assert_eq!(built.snapshot["spec"]["source"]["kind"], "VirtualMachine");

        assert_type_and_name(&built.secret, "v1", "Secret", 253);
        if let Some(service) = &built.service {
            assert_type_and_name(service, "v1", "Service", 63);
        }
        if let Some(policy) = &built.policy {
            assert_type_and_name(policy, "networking.k8s.io/v1", "NetworkPolicy", 253);
        }
    }
    // system disks of four servers, three data disks.
    assert_eq!(data_volumes, 7);
}

/// Restores of every case's server: from its own backup, and as a new server from another's.
#[test]
fn every_generated_restore_is_valid_against_the_published_schema_and_patches_its_vm() {
    let schemas = schemas();
    for case in CASES {
        let server = server(case.server);
        let name = server.metadata.name.clone().expect("name");
        let requests = [
            Restore {
                backup: format!("{name}-20261126-0200"),
                from_server: None,
                token: Some("2026-12-04T10:00:00Z".into()),
            },
            Restore {
                backup: "old-20261126-0200".into(),
                from_server: Some("old".into()),
                token: None,
            },
        ];
        for request in &requests {
            let what = format!("{}: {request:?}", case.file);
            let restore = build::virtual_machine_restore(&server, request).expect(&what);
            let restore = to_value(&restore);
            assert_valid(&schemas.restore, &restore, &what);
            assert_type_and_name(
                &restore,
                "snapshot.kubevirt.io/v1beta1",
                "VirtualMachineRestore",
                253,
            );
            assert_eq!(
                restore["spec"]["virtualMachineSnapshotName"],
                request.backup
            );
            assert_eq!(
                restore["spec"]["target"],
                json!({ "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name })
            );
            assert_eq!(
                restore["metadata"]["ownerReferences"][0]["kind"],
                "VirtualServer"
            );

            // The patches apply to the VM a backup holds (another server's, built by the
            // same builder) and make it this server's: its labels and its instances'.
            let mut source = server.clone();
            source.metadata.name = Some(request.from_server.clone().unwrap_or(name.clone()));
            let image = image_for(&source);
            let mut vm = to_value(
                &build::virtual_machine(&source, &image, &system_size(&source, &image))
                    .expect(&what),
            );
            let patches: Vec<Value> = restore["spec"]["patches"]
                .as_array()
                .expect("patches")
                .iter()
                .map(|p| serde_json::from_str(p.as_str().expect("string")).expect("JSON"))
                .collect();
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(patches)).expect("a JSON patch");
            json_patch::patch(&mut vm, &patch).expect("the patches apply");
            assert_eq!(vm["metadata"]["labels"]["novads.io/virtual-server"], name);
            assert_eq!(
                vm["spec"]["template"]["metadata"]["labels"]["novads.io/virtual-server"],
                name
            );
            assert_valid(&schemas.vm, &vm, &what);
        }
    }

    // The schema can fail: a restore without its snapshot.
    let server = server(CASES[0].server);
    let request = Restore {
        backup: "web-20261126-0200".into(),
        from_server: None,
        token: None,
    };
    let mut restore = to_value(&build::virtual_machine_restore(&server, &request).expect("builds"));
    if let Some(spec) = restore["spec"].as_object_mut() {
        spec.remove("virtualMachineSnapshotName");
    }
    assert!(
        !errors(&schemas.restore, &restore).is_empty(),
        "restore without a snapshot"
    );
}

/// A restored VM keeps the DataVolumes KubeVirt restored into; every other disk keeps its
/// own name.
#[test]
fn a_restored_vm_keeps_its_restored_disks() {
    let server = server(CASES[0].server);
    let image = image_for(&server);
    let desired =
        build::virtual_machine(&server, &image, &system_size(&server, &image)).expect("builds");
    // As KubeVirt leaves the VM after restoring the system disk only.
    let mut live = to_value(&desired);
    let system = live["spec"]["dataVolumeTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    live["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] = json!("restore-uid-system");
    for volume in live["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
    {
        if volume["dataVolume"]["name"] == system.as_str() {
            volume["dataVolume"]["name"] = json!("restore-uid-system");
        }
    }
    let live: VirtualMachine = serde_json::from_value(live).expect("VM");

    let mut kept = desired.clone();
    build::keep_restored_disks(&mut kept, &live);
    let kept = to_value(&kept);
    let unchanged = to_value(&desired);
    assert_eq!(
        kept["spec"]["dataVolumeTemplates"][0]["metadata"]["name"],
        "restore-uid-system"
    );
    assert_eq!(
        kept["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"],
        "restore-uid-system"
    );
    // Everything else is as built: the other disks, the template's spec.
    assert_eq!(
        kept["spec"]["dataVolumeTemplates"][1],
        unchanged["spec"]["dataVolumeTemplates"][1]
    );
    assert_eq!(
        kept["spec"]["dataVolumeTemplates"][0]["spec"],
        unchanged["spec"]["dataVolumeTemplates"][0]["spec"]
    );
    // A VM that was never restored is applied exactly as built.
    let mut same = desired.clone();
    build::keep_restored_disks(&mut same, &desired);
    assert_eq!(same, desired);
}

#[test]
fn the_schemas_reject_mutated_objects() {
    let schemas = schemas();
    let built = build_case(&CASES[0]);
    assert_valid(&schemas.vm, &built.vm, "unmutated VM");

    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "cpu cores as a word",
            Box::new(|vm: &mut Value| {
                vm["spec"]["template"]["spec"]["domain"]["cpu"]["cores"] = json!("four")
            }),
        ),
        (
            "runStrategy as a number",
            Box::new(|vm: &mut Value| vm["spec"]["runStrategy"] = json!(1)),
        ),
        (
            "disk bus one level too high",
            Box::new(|vm: &mut Value| {
                vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["bus"] =
                    json!("virtio")
            }),
        ),
        (
            "memory that is not a quantity",
            Box::new(|vm: &mut Value| {
                vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = json!("lots")
            }),
        ),
        (
            "an interface without a name",
            Box::new(|vm: &mut Value| {
                if let Some(interface) =
                    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
                        .as_object_mut()
                {
                    interface.remove("name");
                }
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut vm = built.vm.clone();
        mutate(&mut vm);
        assert!(
            !errors(&schemas.vm, &vm).is_empty(),
            "the VM schema accepted {what}"
        );
    }

    // The schema does not know KubeVirt's run strategies (a plain string)…
    let mut vm = built.vm.clone();
    vm["spec"]["runStrategy"] = json!("Sometimes");
    assert!(errors(&schemas.vm, &vm).is_empty());
    // …which is why the tests check them against RUN_STRATEGIES themselves.
    assert!(!RUN_STRATEGIES.contains(&"Sometimes"));

    let mut dv = as_data_volume(&built.vm["spec"]["dataVolumeTemplates"][0]);
    dv["spec"]["sourceRef"]["kynd"] = json!("DataSource");
    assert!(
        !errors(&schemas.dv, &dv).is_empty(),
        "misspelt sourceRef field"
    );
    let mut dv = as_data_volume(&built.vm["spec"]["dataVolumeTemplates"][1]);
    dv["spec"]["storage"]["resources"]["requests"]["storage"] = json!("a lot");
    assert!(
        !errors(&schemas.dv, &dv).is_empty(),
        "storage that is not a quantity"
    );

    let mut snapshot = built.snapshot.clone();
    if let Some(spec) = snapshot["spec"].as_object_mut() {
        spec.remove("source");
    }
    assert!(
        !errors(&schemas.snapshot, &snapshot).is_empty(),
        "snapshot without source"
    );
}

// ---------------------------------------------------------------------------------------------
// What the objects say
// ---------------------------------------------------------------------------------------------

#[test]
fn labels_owner_and_names() {
    let web = server(WEB);
    assert_eq!(
        build::labels(&web),
        BTreeMap::from(
            [
                ("app.kubernetes.io/managed-by", "novads-operator"),
                ("app.kubernetes.io/part-of", "novads"),
                ("novads.io/municipality", "talsi"),
                ("novads.io/virtual-server", "web"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        )
    );
    let owner = build::owner_reference(&web).expect("owner");
    assert_eq!(owner.api_version, "novads.io/v1alpha1");
    assert_eq!(owner.kind, "VirtualServer");
    assert_eq!(owner.name, "web");
    assert_eq!(owner.uid, "aaaaaaaa-0000-0000-0000-000000000001");
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));

    let built = build_case(&CASES[0]);
    let template_labels = &built.vm["spec"]["template"]["metadata"]["labels"];
    assert_eq!(template_labels["novads.io/virtual-server"], "web");
    assert_eq!(template_labels["novads.io/municipality"], "talsi");
    assert_eq!(&built.vm["metadata"]["labels"], template_labels);
    // The Service and the NetworkPolicy select what the template labels the launcher pod with.
    let service = built.service.as_ref().expect("service");
    let policy = built.policy.as_ref().expect("policy");
    assert_eq!(
        service["spec"]["selector"],
        json!({"novads.io/virtual-server": "web"})
    );
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        json!({"novads.io/virtual-server": "web"})
    );
}

#[test]
fn virtual_machine_disks_sources_and_hardware() {
    let web = build_case(&CASES[0]).vm;
    let spec = &web["spec"];
    assert_eq!(spec["runStrategy"], "Always");
    let templates = spec["dataVolumeTemplates"].as_array().expect("templates");
    let names: Vec<&str> = templates
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["web-system", "web-data", "web-logs"]);
    assert_eq!(
        templates[0]["spec"]["sourceRef"],
        json!({"kind": "DataSource", "name": "debian-12", "namespace": "novads-images"})
    );
    assert_eq!(
        templates[0]["spec"]["storage"]["resources"]["requests"]["storage"],
        "40Gi"
    );
    assert_eq!(
        templates[0]["spec"]["storage"]["storageClassName"],
        "ceph-block"
    );
    assert_eq!(templates[1]["spec"]["source"], json!({"blank": {}}));
    assert_eq!(
        templates[1]["spec"]["storage"]["storageClassName"],
        "ceph-block-ssd"
    );
    assert!(
        templates[2]["spec"]["storage"]
            .get("storageClassName")
            .is_none()
    );

    let domain = &spec["template"]["spec"]["domain"];
    assert_eq!(
        domain["cpu"],
        json!({"cores": 4, "sockets": 1, "threads": 1})
    );
    assert_eq!(domain["memory"]["guest"], "8Gi");
    assert_eq!(
        domain["resources"]["requests"],
        domain["resources"]["limits"]
    );
    assert_eq!(
        domain["devices"]["interfaces"],
        json!([{"name": "default", "masquerade": {}}])
    );
    assert_eq!(
        spec["template"]["spec"]["networks"],
        json!([{"name": "default", "pod": {}}])
    );
    assert_eq!(spec["template"]["spec"]["evictionStrategy"], "LiveMigrate");
    let volumes = spec["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert_eq!(
        volumes.last(),
        Some(
            &json!({"name": "cloudinit", "cloudInitNoCloud": {"secretRef": {"name": "web-cloud-init"}}})
        )
    );
    // Every disk has its volume, and every volume its disk.
    let disk_names: Vec<&Value> = domain["devices"]["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| &d["name"])
        .collect();
    let volume_names: Vec<&Value> = volumes.iter().map(|v| &v["name"]).collect();
    assert_eq!(disk_names, volume_names);

    let db = build_case(&CASES[1]).vm;
    assert_eq!(db["spec"]["runStrategy"], "Manual");
    assert_eq!(
        db["spec"]["dataVolumeTemplates"][0]["spec"]["source"],
        json!({"http": {"url": "https://images.example.lv/rocky-9-genericcloud.qcow2"}})
    );
    let ci = build_case(&CASES[2]).vm;
    assert_eq!(ci["spec"]["runStrategy"], "Halted");
    assert_eq!(
        ci["spec"]["dataVolumeTemplates"][0]["spec"]["source"],
        json!({"registry": {"url": "docker://quay.io/containerdisks/fedora:41"}})
    );
    // The minimal server's system disk is the image's minimum.
    let tiny = build_case(&CASES[3]).vm;
    assert_eq!(
        tiny["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]["resources"]["requests"]["storage"],
        "8Gi"
    );
}

#[test]
fn service_and_network_policy() {
    let web = build_case(&CASES[0]);
    let service = web.service.expect("service");
    assert_eq!(service["metadata"]["name"], "web");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    // The load balancer admits the union of the ports' sources; the policy narrows each port.
    assert_eq!(
        service["spec"]["loadBalancerSourceRanges"],
        json!(["10.20.0.0/16", "192.0.2.0/24", "2001:db8:20::/48"])
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "tcp-443", "port": 443, "protocol": "TCP", "targetPort": 443},
            {"name": "udp-51820", "port": 51820, "protocol": "UDP", "targetPort": 51820},
        ])
    );
    let policy = web.policy.expect("policy");
    assert_eq!(policy["metadata"]["name"], "web-expose");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert!(policy["spec"].get("egress").is_none());
    assert_eq!(
        policy["spec"]["ingress"],
        json!([
            {
                "from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}],
                "ports": [{"port": 443, "protocol": "TCP"}],
            },
            {
                "from": [{"ipBlock": {"cidr": "2001:db8:20::/48"}}],
                "ports": [{"port": 51820, "protocol": "UDP"}],
            },
        ])
    );

    let db = build_case(&CASES[1]);
    let service = db.service.expect("service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert!(service["spec"].get("externalTrafficPolicy").is_none());
    assert!(service["spec"].get("loadBalancerSourceRanges").is_none());

    // Nested and duplicate sources are listed once.
    let nested = with(WEB, |server| {
        let expose = server.spec.expose.as_mut().expect("expose");
        expose.ports[1].protocol = novads_crds::Protocol::Tcp;
        expose.ports[1].allowed_sources = vec!["10.20.8.0/24".into(), "192.0.2.0/24".into()];
    });
    let service = build::service(&nested).expect("service").expect("exposed");
    assert_eq!(
        service.spec.expect("spec").load_balancer_source_ranges,
        Some(vec!["10.20.0.0/16".to_string(), "192.0.2.0/24".to_string()])
    );

    let tiny = server(TINY);
    assert_eq!(build::service(&tiny), Ok(None));
    assert_eq!(build::network_policy(&tiny), Ok(None));
}

/// The NetworkPolicies of the tenancy golden files (tests/golden/*.yaml) in `namespace`.
fn tenancy_policies(namespace: &str) -> Vec<NetworkPolicy> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut policies = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("golden directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(&path).expect("read"))
                .expect("golden YAML");
        policies.extend(
            documents
                .into_iter()
                .filter(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["namespace"] == namespace)
                .map(|d| serde_json::from_value::<NetworkPolicy>(d).expect("NetworkPolicy")),
        );
    }
    assert!(
        !policies.is_empty(),
        "no tenancy golden file for {namespace}"
    );
    policies
}

#[test]
fn golden_objects_expose_each_server_exactly_as_declared() {
    for case in CASES {
        let server = server(case.server);
        let namespace = server.metadata.namespace.clone().expect("namespace");
        let name = server.metadata.name.clone().expect("name");
        let golden = std::fs::read_to_string(golden_dir().join(format!("{}.yaml", case.file)))
            .expect("golden file");
        let documents: Vec<Value> = serde_saphyr::from_multiple(&golden).expect("golden YAML");
        let mut policies = tenancy_policies(&namespace);
        let mut services = Vec::new();
        let mut labels = None;
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            match document["kind"].as_str() {
                Some("NetworkPolicy") => {
                    policies.push(serde_json::from_value(document).expect("policy"))
                }
                Some("Service") => {
                    services.push(serde_json::from_value(document).expect("service"))
                }
                Some("VirtualMachine") => {
                    labels = Some(
                        serde_json::from_value::<BTreeMap<String, String>>(
                            document["spec"]["template"]["metadata"]["labels"].clone(),
                        )
                        .expect("pod labels"),
                    );
                }
                _ => {}
            }
        }
        let labels = labels.expect("the golden file has the VirtualMachine");
        let pod = ServerPod {
            server: &name,
            namespace: &namespace,
            labels: &labels,
        };
        let exposure = exposure::effective_exposure(pod, &policies, &services).expect(case.file);
        let drift = exposure::drift(&server, &exposure).expect(case.file);
        assert!(drift.is_empty(), "{}: {drift:#?}", case.file);
    }
}

#[test]
fn snapshots_are_owned_only_when_deleted_with_the_server() {
    let web = build_case(&CASES[0]).snapshot;
    assert_eq!(web["metadata"]["name"], "web-20261126-0200");
    assert_eq!(web["metadata"]["labels"]["novads.io/backup"], "scheduled");
    assert_eq!(web["metadata"]["labels"]["novads.io/virtual-server"], "web");
    assert_eq!(
        web["metadata"]["ownerReferences"][0]["kind"],
        "VirtualServer"
    );

    let db = build_case(&CASES[1]).snapshot; // onDelete: Retain
    assert!(db["metadata"].get("ownerReferences").is_none(), "{db}");
    let ci = build_case(&CASES[2]).snapshot; // onDelete defaults to Retain
    assert!(ci["metadata"].get("ownerReferences").is_none(), "{ci}");
    let tiny = build_case(&CASES[3]).snapshot; // no backup section at all
    assert!(tiny["metadata"].get("ownerReferences").is_none(), "{tiny}");

    // UTC, whatever the instant's origin.
    let late: Timestamp = "2026-12-31T23:59:59.999+02:00".parse().expect("timestamp");
    let snapshot: VirtualMachineSnapshot = build::snapshot(&server(TINY), late).expect("snapshot");
    assert_eq!(
        snapshot.metadata.name.as_deref(),
        Some("tiny-20261231-2159")
    );
}

#[test]
fn built_objects_read_back_as_the_typed_kubevirt_structs() {
    for case in CASES {
        let built = build_case(case);
        let vm: VirtualMachine = serde_json::from_value(built.vm.clone()).expect("VM");
        assert_eq!(serde_json::to_value(&vm).expect("serialise"), built.vm);
        let snapshot: VirtualMachineSnapshot =
            serde_json::from_value(built.snapshot.clone()).expect("snapshot");
        assert_eq!(
            serde_json::to_value(&snapshot).expect("serialise"),
            built.snapshot
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

fn with(yaml: &str, edit: impl FnOnce(&mut VirtualServer)) -> VirtualServer {
    let mut server = server(yaml);
    edit(&mut server);
    server
}

fn vm_error(server: &VirtualServer) -> BuildError {
    let image = image_for(server);
    let size = system_size(server, &image);
    build::virtual_machine(server, &image, &size).expect_err("must be refused")
}

#[test]
fn garbage_cidrs_are_refused_naming_the_field() {
    let server = with(WEB, |s| {
        if let Some(expose) = s.spec.expose.as_mut() {
            expose.ports[1].allowed_sources = vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()];
        }
    });
    let error = build::network_policy(&server).expect_err("garbage");
    assert_eq!(
        error,
        BuildError::InvalidCidr {
            field: "spec.expose.ports[1].allowedSources[1]".into(),
            value: "10.0.0.0/33".into(),
        }
    );
    assert!(
        error
            .to_string()
            .starts_with(r#"spec.expose.ports[1].allowedSources[1]: "10.0.0.0/33" is not a CIDR"#),
        "{error}"
    );

    for garbage in ["10.0.0.0", "ten/8", "10.0.0.0/8/8", "::/129", ""] {
        let server = with(WEB, |s| {
            if let Some(expose) = s.spec.expose.as_mut() {
                expose.ports[0].allowed_sources = vec![garbage.to_string()];
            }
        });
        assert!(
            matches!(build::network_policy(&server), Err(BuildError::InvalidCidr { ref field, .. }) if field == "spec.expose.ports[0].allowedSources[0]"),
            "{garbage:?}"
        );
    }

    let server = with(WEB, |s| {
        if let Some(expose) = s.spec.expose.as_mut() {
            expose.ports[0].allowed_sources = vec!["10.20.1.7/16".into()];
        }
    });
    assert_eq!(
        build::network_policy(&server).map(|_| ()).map_err(|e| e.to_string()),
        Err(r#"spec.expose.ports[0].allowedSources[0]: "10.20.1.7/16" has host bits set; did you mean 10.20.0.0/16?"#.to_string())
    );
}

#[test]
fn duplicate_ports_are_refused() {
    let server = with(WEB, |s| {
        if let Some(expose) = s.spec.expose.as_mut() {
            let again = expose.ports[0].clone();
            expose.ports.push(again);
        }
    });
    let expected = Err(BuildError::DuplicatePort {
        index: 2,
        port: 443,
        protocol: "TCP",
    });
    assert_eq!(build::service(&server).map(|_| ()), expected);
    assert_eq!(build::network_policy(&server).map(|_| ()), expected);
    assert_eq!(
        expected.map_err(|e| e.to_string()),
        Err::<(), _>("spec.expose.ports[2]: 443/TCP is listed twice".to_string())
    );
}

#[test]
fn oversize_tenant_user_data_is_refused() {
    let web = server(WEB);
    let limit = build::MAX_TENANT_USER_DATA;
    assert_eq!(limit, 65536);
    let exactly = format!(
        "#cloud-config\n{}",
        "#".repeat(limit - "#cloud-config\n".len())
    );
    assert!(build::cloud_init_secret(&web, Some(&exactly)).is_ok());
    let over = format!("{exactly}#");
    let error = build::cloud_init_secret(&web, Some(&over)).expect_err("too large");
    assert_eq!(
        error,
        BuildError::UserDataTooLarge {
            size: limit + 1,
            limit
        }
    );
    assert_eq!(
        error.to_string(),
        "cloud-init user data from spec.cloudInit.secretRef is 65537 bytes; at most 65536 bytes (64 KiB) are accepted"
    );
}

#[test]
fn names_that_would_break_kubernetes_limits_are_refused() {
    // 57 characters: fine as a label value, but `<name>-system` has 64.
    let name57 = format!("a{}", "b".repeat(56));
    let server = with(TINY, |s| s.metadata.name = Some(name57.clone()));
    assert_eq!(
        vm_error(&server),
        BuildError::NameTooLong {
            kind: "DataVolume",
            name: format!("{name57}-system"),
            length: 64,
            limit: 63,
            hint: String::new(),
        }
    );
    assert!(build::cloud_init_secret(&server, None).is_ok());
    assert!(build::snapshot(&server, snapshot_time()).is_ok());

    // A data disk name that pushes `<server>-<disk>` over the limit is named in the hint.
    let server = with(WEB, |s| {
        s.metadata.name = Some("w".repeat(50));
        s.spec.disks.data[1].name = "archive-of-2026".into();
    });
    let error = vm_error(&server);
    assert!(
        matches!(
            &error,
            BuildError::NameTooLong {
                kind: "DataVolume",
                length: 66,
                limit: 63,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("spec.disks.data[1].name"),
        "{error}"
    );

    // 64 characters: not even a label value.
    let name64 = "x".repeat(64);
    let server = with(TINY, |s| s.metadata.name = Some(name64.clone()));
    let too_long = BuildError::NameTooLong {
        kind: "VirtualServer",
        name: name64,
        length: 64,
        limit: 63,
        hint: String::new(),
    };
    assert_eq!(vm_error(&server), too_long);
    assert_eq!(
        build::cloud_init_secret(&server, None).map(|_| ()),
        Err(too_long.clone())
    );
    assert_eq!(
        build::snapshot(&server, snapshot_time()).map(|_| ()),
        Err(too_long)
    );
    assert!(
        vm_error(&server)
            .to_string()
            .contains("Kubernetes allows at most 63"),
    );

    // Names that are DNS subdomains but not labels, and Service names that start with a digit.
    let server = with(TINY, |s| s.metadata.name = Some("web.talsi".into()));
    assert!(matches!(
        vm_error(&server),
        BuildError::InvalidName {
            kind: "VirtualServer",
            ..
        }
    ));
    let server = with(WEB, |s| s.metadata.name = Some("1web".into()));
    assert!(matches!(
        build::service(&server),
        Err(BuildError::InvalidName {
            kind: "Service",
            ..
        })
    ));
    assert!(build::network_policy(&server).is_ok());
}

#[test]
fn incomplete_objects_and_foreign_namespaces_are_refused() {
    let no_uid = with(WEB, |s| s.metadata.uid = None);
    let missing_uid = BuildError::IncompleteObject { missing: "uid" };
    assert_eq!(build::owner_reference(&no_uid), Err(missing_uid.clone()));
    assert_eq!(vm_error(&no_uid), missing_uid);
    assert_eq!(
        build::cloud_init_secret(&no_uid, None).map(|_| ()),
        Err(missing_uid.clone())
    );
    assert_eq!(
        build::service(&no_uid).map(|_| ()),
        Err(missing_uid.clone())
    );
    assert_eq!(
        build::network_policy(&no_uid).map(|_| ()),
        Err(missing_uid.clone())
    );
    assert_eq!(
        build::snapshot(&no_uid, snapshot_time()).map(|_| ()),
        Err(missing_uid)
    );
    assert_eq!(missing_uid_message(), "metadata.uid is missing");

    let no_name = with(WEB, |s| s.metadata.name = None);
    assert_eq!(
        build::owner_reference(&no_name),
        Err(BuildError::IncompleteObject { missing: "name" })
    );
    let no_namespace = with(WEB, |s| s.metadata.namespace = None);
    assert_eq!(
        build::cloud_init_secret(&no_namespace, None).map(|_| ()),
        Err(BuildError::IncompleteObject {
            missing: "namespace"
        })
    );
    for namespace in ["default", "muni-", "talsi"] {
        let foreign = with(WEB, |s| s.metadata.namespace = Some(namespace.into()));
        assert_eq!(
            vm_error(&foreign),
            BuildError::NotInMunicipalityNamespace {
                namespace: namespace.into()
            }
        );
        assert!(!build::labels(&foreign).contains_key("novads.io/municipality"));
    }
}

fn missing_uid_message() -> String {
    BuildError::IncompleteObject { missing: "uid" }.to_string()
}

#[test]
fn inconsistent_images_and_disks_are_refused() {
    let web = server(WEB);
    let mut images = images();
    let rocky = images.remove(1);
    let size = Quantity("40Gi".into());
    assert_eq!(
        build::virtual_machine(&web, &rocky, &size).expect_err("wrong image"),
        BuildError::ImageMismatch {
            expected: "debian-12".into(),
            actual: "rocky-9".into()
        }
    );
    let mut two_sources = image_for(&web);
    two_sources.spec.source.http = Some("https://example.lv/x.qcow2".into());
    assert_eq!(
        build::virtual_machine(&web, &two_sources, &size).expect_err("two sources"),
        BuildError::ImageSource {
            image: "debian-12".into(),
            count: 2
        }
    );
    let mut no_source = image_for(&web);
    no_source.spec.source.data_source = None;
    assert!(matches!(
        build::virtual_machine(&web, &no_source, &size),
        Err(BuildError::ImageSource { count: 0, .. })
    ));

    let reserved = with(WEB, |s| s.spec.disks.data[0].name = "system".into());
    assert_eq!(
        vm_error(&reserved).to_string(),
        r#"spec.disks.data[0].name: "system" is reserved for the system disk"#
    );
    let duplicate = with(WEB, |s| s.spec.disks.data[1].name = "data".into());
    assert_eq!(
        vm_error(&duplicate),
        BuildError::DuplicateDiskName {
            index: 1,
            name: "data".into()
        }
    );
    let no_cpu = with(WEB, |s| s.spec.cpu = 0);
    assert_eq!(vm_error(&no_cpu), BuildError::InvalidCpu { cpu: 0 });
}

// ---------------------------------------------------------------------------------------------
// cloud-init user data
// ---------------------------------------------------------------------------------------------

/// One MIME part: lower-cased header names, and the body decoded.
#[derive(Debug)]
struct Part {
    headers: BTreeMap<String, String>,
    body: String,
}

fn parse_headers(block: &str) -> BTreeMap<String, String> {
    block
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect()
}

/// A strict-enough MIME multipart parser (RFC 2046): headers, boundary, parts, base64.
fn parse_multipart(text: &str) -> (BTreeMap<String, String>, Vec<Part>) {
    let (head, body) = text.split_once("\n\n").expect("headers and body");
    let headers = parse_headers(head);
    assert_eq!(headers.get("mime-version").map(String::as_str), Some("1.0"));
    let content_type = headers.get("content-type").expect("content-type");
    let boundary = content_type
        .split_once("boundary=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(boundary, _)| boundary)
        .expect("quoted boundary");
    let delimiter = format!("--{boundary}");
    let close = format!("\n--{boundary}--\n");
    let body = body
        .strip_suffix(&close)
        .expect("closing delimiter at the end");
    let body = body
        .strip_prefix(&format!("{delimiter}\n"))
        .expect("first delimiter");
    let parts = body
        .split(&format!("\n{delimiter}\n"))
        .map(|part| {
            let (head, body) = part.split_once("\n\n").expect("part headers and body");
            let headers = parse_headers(head);
            let body = match headers.get("content-transfer-encoding").map(String::as_str) {
                Some("base64") => String::from_utf8(decode_base64(body)).expect("UTF-8"),
                Some("7bit") | None => {
                    assert!(body.is_ascii(), "unencoded parts must be ASCII");
                    body.to_string()
                }
                Some(other) => panic!("unexpected encoding {other}"),
            };
            Part { headers, body }
        })
        .collect();
    (headers, parts)
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(clean.len().is_multiple_of(4), "base64 length");
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&b| b == b'=').count();
        let n = chunk
            .iter()
            .map(|&b| if b == b'=' { 0 } else { value(b) })
            .fold(0u32, |n, v| (n << 6) | v);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

fn cloud_config(text: &str) -> Value {
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    serde_saphyr::from_str(text).expect("cloud-config YAML")
}

/// cloud-init's `dict(replace)` merge of a later part into what the earlier ones produced.
fn merge_replace(mut earlier: Value, later: &Value) -> Value {
    if let (Some(earlier), Some(later)) = (earlier.as_object_mut(), later.as_object()) {
        for (key, value) in later {
            earlier.insert(key.clone(), value.clone());
        }
    }
    earlier
}

#[test]
fn platform_cloud_config_alone() {
    let user_data = build_case(&CASES[3]).user_data;
    let config = cloud_config(&user_data);
    assert_eq!(
        config,
        json!({
            "hostname": "tiny",
            "disable_root": true,
            "users": ["default"],
            "system_info": {"default_user": {"lock_passwd": true}},
            "ssh_pwauth": false,
        })
    );
    assert_eq!(user_data.lines().last(), Some("ssh_pwauth: false"));
}

#[test]
fn tenant_user_data_comes_first_and_the_platform_wins() {
    let built = build_case(&CASES[0]);
    let (_, parts) = parse_multipart(&built.user_data);
    assert_eq!(parts.len(), 2);

    let tenant = &parts[0];
    assert_eq!(
        tenant.headers["content-type"],
        "text/x-not-multipart; charset=\"utf-8\""
    );
    assert_eq!(tenant.body, WEB_TENANT_USER_DATA.trim_end_matches('\n'));

    let platform = &parts[1];
    assert_eq!(
        platform.headers["content-type"],
        "text/cloud-config; charset=\"utf-8\""
    );
    assert_eq!(platform.headers["merge-type"], build::PLATFORM_MERGE_TYPE);
    // A key comment with non-ASCII characters forces base64 (see push_text_part).
    assert_eq!(platform.headers["content-transfer-encoding"], "base64");
    let config = cloud_config(&platform.body);
    assert_eq!(platform.body.lines().last(), Some("ssh_pwauth: false"));
    assert_eq!(config["hostname"], "web");
    assert_eq!(
        config["ssh_authorized_keys"],
        json!([
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtalsiJanaKey0000000000000000000000000000 jana@talsi",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJanisKey11111111111111111111111111111111 jānis@talsi: laptop #2",
        ])
    );

    // What cloud-init ends up with: the tenant's packages and commands, the platform's users and
    // password settings.
    let merged = merge_replace(cloud_config(&tenant.body), &config);
    assert_eq!(merged["ssh_pwauth"], false);
    assert_eq!(merged["users"], json!(["default"]));
    assert_eq!(merged["packages"], json!(["nginx", "postgresql"]));
    assert_eq!(merged["system_info"]["default_user"]["lock_passwd"], true);
}

#[test]
fn scripts_and_mime_messages_of_tenants_are_kept_intact() {
    let db = build_case(&CASES[1]);
    let (_, parts) = parse_multipart(&db.user_data);
    assert_eq!(parts[0].body, DB_TENANT_USER_DATA.trim_end_matches('\n'));
    assert_eq!(parts[0].headers["content-transfer-encoding"], "7bit");
    assert_eq!(parts[1].headers["content-transfer-encoding"], "7bit");
    assert_eq!(cloud_config(&parts[1].body)["ssh_pwauth"], false);

    // A MIME message of the tenant's becomes a nested multipart: its headers are the part's.
    let ci = build_case(&CASES[2]);
    let (_, parts) = parse_multipart(&ci.user_data);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        parts[0].headers["content-type"],
        "multipart/mixed; boundary=\"tenant\""
    );
    let nested = format!(
        "{}\n\n{}\n",
        parts[0]
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        parts[0].body
    );
    let (_, nested_parts) = parse_multipart(&nested);
    assert_eq!(nested_parts.len(), 2);
    assert_eq!(
        nested_parts[1].headers["content-type"],
        "text/x-shellscript"
    );
    assert_eq!(parts[1].headers["merge-type"], build::PLATFORM_MERGE_TYPE);
    assert_eq!(parts[1].body.lines().last(), Some("ssh_pwauth: false"));
}

#[test]
fn the_boundary_never_occurs_in_a_part() {
    let tenant = "#!/bin/sh\necho '--==novads-cloud-init==' '==novads-cloud-init-1=='\n";
    let user_data = build::cloud_init_user_data(&server(TINY), Some(tenant)).expect("user data");
    assert!(
        user_data
            .starts_with("Content-Type: multipart/mixed; boundary=\"==novads-cloud-init-2==\"")
    );
    let (_, parts) = parse_multipart(&user_data);
    assert_eq!(parts[0].body, tenant.trim_end_matches('\n'));
}
