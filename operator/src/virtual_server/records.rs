//! The controller's own caches of the servers' children: per namespace and name, a compact
//! record of what a reconcile reads of each object instead of the Kubernetes object itself
//! (its `ObjectMeta` alone outweighs what is read). They are fed from the same watch streams
//! a reflector would be fed from, and follow its rules: a listing (Init, InitApply...,
//! InitDone) replaces the contents only once it is complete, Apply and Delete change them at
//! once, and the cache is ready after its first complete listing.
//!
//! A reconcile reads the object back ([`Record::object`]): the record rebuilt into the type
//! the pure decisions take, holding every field they read.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use compact_str::CompactString;
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

mod exposure;
mod snapshot;
mod stamp;
#[cfg(test)]
mod tests;
mod text;
mod vm;
mod vmi;

pub use exposure::{NetworkPolicyRecord, ServiceRecord};
pub use snapshot::{ServerName, SnapshotPhase, SnapshotRecord};
use stamp::Stamp;
use text::{ConditionRecord, Text, Uid};
pub use vm::VmRecord;
pub use vmi::VmiRecord;

/// What the cache keeps of one kind of object.
pub trait Record: Sized {
    type Object: Resource;

    /// The record of `object`; `None` for an object no reconcile reads (it is not kept).
    fn record(object: &Self::Object) -> Option<Self>;

    /// The object `namespace/name` as a reconcile reads it: every field a reconcile reads is
    /// as in the watched object.
    fn object(&self, namespace: &str, name: &str) -> Self::Object;
}

/// Per namespace, per name, the records. Each namespace name is held once.
type Contents<R> = HashMap<CompactString, ByName<R>>;

/// A namespace's records, sorted by name in one dense list: a namespace holds tens of them,
/// few enough that inserting into the list costs less than a tree's half-empty nodes would.
struct ByName<R>(Vec<(CompactString, R)>);

impl<R> ByName<R> {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(held, _)| (**held).cmp(name))
    }

    fn get(&self, name: &str) -> Option<&R> {
        let index = self.position(name).ok()?;
        self.0.get(index).map(|(_, record)| record)
    }

    fn insert(&mut self, name: &str, record: R) {
        match self.position(name) {
            Ok(index) => {
                if let Some((_, held)) = self.0.get_mut(index) {
                    *held = record;
                }
            }
            Err(index) => self.0.insert(index, (name.into(), record)),
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(index) = self.position(name) {
            self.0.remove(index);
        }
    }
}

/// The watch stopped before the cache had listed its objects once.
#[derive(Debug, thiserror::Error)]
#[error("the watch feeding the cache stopped before its first listing")]
pub struct WriterDropped;

/// The reading side of a record cache. Cheap to clone: clones share the records.
pub struct Records<R> {
    contents: Arc<RwLock<Contents<R>>>,
    ready: watch::Receiver<bool>,
}

impl<R> Clone for Records<R> {
    fn clone(&self) -> Self {
        Self {
            contents: self.contents.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// The writing side of a record cache: the watch stream's events go through [`Self::apply`].
pub struct RecordsWriter<R> {
    contents: Arc<RwLock<Contents<R>>>,
    /// What a (re)listing collects until it is complete, as kube's reflector buffers it, so a
    /// reconcile never reads a half listed cache.
    listing: Option<Vec<Listed<R>>>,
    ready: watch::Sender<bool>,
}

/// An empty record cache, not ready until its writer has seen a complete listing.
pub fn records<R>() -> (Records<R>, RecordsWriter<R>) {
    let contents = Arc::new(RwLock::new(Contents::default()));
    let (sender, receiver) = watch::channel(false);
    (
        Records {
            contents: contents.clone(),
            ready: receiver,
        },
        RecordsWriter {
            contents,
            listing: None,
            ready: sender,
        },
    )
}

/// The namespace and name of `object`; objects without them cannot be looked up.
fn id<K: Resource>(object: &K) -> Option<(&str, &str)> {
    let meta = object.meta();
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

fn insert<R>(contents: &mut Contents<R>, namespace: &str, name: &str, record: R) {
    match contents.get_mut(namespace) {
        Some(names) => names.insert(name, record),
        None => {
            contents.insert(namespace.into(), ByName(vec![(name.into(), record)]));
        }
    }
}

fn remove<R>(contents: &mut Contents<R>, namespace: &str, name: &str) {
    if let Some(names) = contents.get_mut(namespace) {
        names.remove(name);
        if names.0.is_empty() {
            contents.remove(namespace);
        }
    }
}

/// One object of a listing in progress: namespace, name and record.
type Listed<R> = (CompactString, CompactString, R);

/// The contents a complete listing makes, each namespace's list allocated at its exact size
/// (a list grown one record at a time would leave the memory of its smaller copies behind);
/// of the same object listed twice, the later record counts.
fn grouped<R>(mut listed: Vec<Listed<R>>) -> Contents<R> {
    // Stable: equal objects keep their order, the later one last.
    listed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let sizes: Vec<usize> = listed
        .chunk_by(|a, b| a.0 == b.0)
        .map(<[Listed<R>]>::len)
        .collect();
    let mut contents = Contents::with_capacity(sizes.len());
    let mut listed = listed.into_iter();
    for size in sizes {
        let mut names: Vec<(CompactString, R)> = Vec::with_capacity(size);
        let mut namespace = None;
        for (held, name, record) in listed.by_ref().take(size) {
            namespace.get_or_insert(held);
            match names.last_mut() {
                Some((last, kept)) if *last == name => *kept = record,
                _ => names.push((name, record)),
            }
        }
        if let Some(namespace) = namespace {
            contents.insert(namespace, ByName(names));
        }
    }
    contents
}

impl<R: Record> RecordsWriter<R> {
    /// Follows one watch event.
    pub fn apply(&mut self, event: &watcher::Event<R::Object>) {
        match event {
            watcher::Event::Apply(object) => {
                let Some((namespace, name)) = id(object) else {
                    return;
                };
                // A lock is only poisoned by a panic between single inserts and removals,
                // which leave the map whole: going on with it is sound.
                let mut contents = self
                    .contents
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                match R::record(object) {
                    Some(record) => insert(&mut contents, namespace, name, record),
                    // No longer one a reconcile reads (e.g. relabelled): it leaves the cache.
                    None => remove(&mut contents, namespace, name),
                }
            }
            watcher::Event::Delete(object) => {
                if let Some((namespace, name)) = id(object) {
                    let mut contents = self
                        .contents
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    remove(&mut contents, namespace, name);
                }
            }
            watcher::Event::Init => self.listing = Some(Vec::new()),
            watcher::Event::InitApply(object) => {
                if let (Some(listing), Some((namespace, name)), Some(record)) =
                    (self.listing.as_mut(), id(object), R::record(object))
                {
                    listing.push((namespace.into(), name.into(), record));
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.listing.take() {
                    let listed = grouped(listed);
                    *self
                        .contents
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = listed;
                    self.ready.send_replace(true);
                }
            }
        }
    }
}

impl<R: Record> Records<R> {
    /// A ready cache of `objects`, as after a first listing (tests and benchmarks).
    pub fn listed<'a>(objects: impl IntoIterator<Item = &'a R::Object>) -> Self
    where
        R::Object: Clone + 'a,
    {
        let (records, mut writer) = records();
        writer.apply(&watcher::Event::Init);
        for object in objects {
            writer.apply(&watcher::Event::InitApply(object.clone()));
        }
        writer.apply(&watcher::Event::InitDone);
        records
    }

    /// Waits for the first complete listing.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| WriterDropped)
    }

    /// The object `namespace/name`, as a reconcile reads it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<R::Object> {
        let contents = self.contents.read().unwrap_or_else(PoisonError::into_inner);
        let record = contents.get(namespace)?.get(name)?;
        Some(record.object(namespace, name))
    }

    /// The objects of `namespace` whose name and record are `wanted`, by name.
    pub fn filter(&self, namespace: &str, wanted: impl Fn(&str, &R) -> bool) -> Vec<R::Object> {
        let contents = self.contents.read().unwrap_or_else(PoisonError::into_inner);
        contents
            .get(namespace)
            .into_iter()
            .flat_map(|names| &names.0)
            .filter(|(name, record)| wanted(name, record))
            .map(|(name, record)| record.object(namespace, name))
            .collect()
    }

    /// How many records the cache holds.
    pub fn len(&self) -> usize {
        let contents = self.contents.read().unwrap_or_else(PoisonError::into_inner);
        contents.values().map(|names| names.0.len()).sum()
    }

    /// Whether the cache holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod store_tests {
    use std::time::Duration;

    use super::*;
    use crate::kubevirt::VirtualMachineSnapshot;
    use crate::virtual_server::build::{BACKUP_LABEL, BACKUP_SCHEDULED, SERVER_LABEL};
    use crate::virtual_server::status;

    fn snapshot(namespace: &str, name: &str, server: &str) -> VirtualMachineSnapshot {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": { "name": name, "namespace": namespace,
                          "labels": { SERVER_LABEL: server, BACKUP_LABEL: BACKUP_SCHEDULED } },
            "spec": { "source": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": server } }
        }))
        .expect("snapshot")
    }

    fn names(cache: &Records<SnapshotRecord>, namespace: &str, server: &str) -> Vec<String> {
        cache
            .filter(namespace, |name, s| s.of_server(name, server))
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    }

    #[tokio::test]
    async fn ready_after_the_first_complete_listing_only() {
        let (cache, mut writer) = records::<SnapshotRecord>();
        let waiting = cache.clone();
        let ready = tokio::spawn(async move { waiting.wait_until_ready().await.is_ok() });
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(snapshot(
            "muni-talsi",
            "web-1",
            "web",
        )));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ready.is_finished(), "ready before the listing is done");
        assert!(cache.is_empty(), "a listing in progress is not visible");
        writer.apply(&watcher::Event::InitDone);
        assert!(ready.await.expect("task"));
        assert_eq!(cache.len(), 1);

        // A writer gone before its first listing leaves the cache unusable, not empty.
        let (never, writer) = records::<SnapshotRecord>();
        drop(writer);
        assert!(never.wait_until_ready().await.is_err());
    }

    #[test]
    fn follows_applies_deletions_relabellings_and_a_relisting() {
        let (cache, mut writer) = records::<SnapshotRecord>();
        writer.apply(&watcher::Event::Init);
        for (namespace, name, server) in [
            ("muni-talsi", "web-2", "web"),
            ("muni-talsi", "web-1", "web"),
            ("muni-talsi", "db-1", "db"),
            ("muni-ventspils", "web-1", "web"),
        ] {
            writer.apply(&watcher::Event::InitApply(snapshot(
                namespace, name, server,
            )));
        }
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache, "muni-talsi", "web"), ["web-1", "web-2"]);
        assert_eq!(names(&cache, "muni-ventspils", "web"), ["web-1"]);
        assert!(names(&cache, "muni-limbazi", "web").is_empty());

        writer.apply(&watcher::Event::Apply(snapshot(
            "muni-talsi",
            "web-3",
            "web",
        )));
        writer.apply(&watcher::Event::Delete(snapshot(
            "muni-talsi",
            "web-1",
            "web",
        )));
        // Relabelled to another server: it moves; no longer scheduled: it leaves the cache.
        writer.apply(&watcher::Event::Apply(snapshot(
            "muni-talsi",
            "web-2",
            "db",
        )));
        let mut manual = snapshot("muni-talsi", "db-1", "db");
        if let Some(labels) = manual.metadata.labels.as_mut() {
            labels.remove(BACKUP_LABEL);
        }
        writer.apply(&watcher::Event::Apply(manual));
        assert_eq!(names(&cache, "muni-talsi", "web"), ["web-3"]);
        assert_eq!(names(&cache, "muni-talsi", "db"), ["web-2"]);
        assert!(cache.get("muni-talsi", "db-1").is_none());

        // A relisting in progress leaves the cache as it was until it is complete, then
        // replaces it (what the relisting no longer saw is gone).
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(snapshot(
            "muni-talsi",
            "web-9",
            "web",
        )));
        assert_eq!(names(&cache, "muni-talsi", "web"), ["web-3"]);
        // The same object listed twice (relabelled in between): the later one counts.
        for server in ["web", "db"] {
            writer.apply(&watcher::Event::InitApply(snapshot(
                "muni-ventspils",
                "db-1",
                server,
            )));
        }
        writer.apply(&watcher::Event::InitApply(snapshot(
            "muni-limbazi",
            "web-1",
            "web",
        )));
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache, "muni-talsi", "web"), ["web-9"]);
        assert!(names(&cache, "muni-ventspils", "web").is_empty());
        assert_eq!(names(&cache, "muni-ventspils", "db"), ["db-1"]);
        assert_eq!(names(&cache, "muni-limbazi", "web"), ["web-1"]);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_snapshot_record_reads_back_as_retention_scheduling_and_the_status_read_it() {
        let watched = |status: serde_json::Value, deleting: bool| {
            let mut snapshot: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
                "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                "metadata": { "name": "web-20250602-0200", "namespace": "muni-talsi", "uid": "uid-s",
                              "resourceVersion": "4711", "creationTimestamp": "2025-06-02T02:00:01Z",
                              "labels": { SERVER_LABEL: "web", BACKUP_LABEL: BACKUP_SCHEDULED,
                                          "app.kubernetes.io/managed-by": "novads-operator" },
                              "managedFields": [{ "manager": "novads-operator", "operation": "Apply" }] },
                "spec": { "source": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web" } },
                "status": status
            }))
            .expect("snapshot");
            if deleting {
                snapshot.metadata.deletion_timestamp = snapshot.metadata.creation_timestamp.clone();
            }
            snapshot
        };
        for (status, deleting) in [
            (
                serde_json::json!({ "readyToUse": true, "creationTime": "2025-06-02T02:00:00Z", "phase": "Succeeded",
                                 "conditions": [{ "type": "Ready", "status": "True" }] }),
                false,
            ),
            (
                serde_json::json!({ "readyToUse": true, "phase": "Succeeded" }),
                true,
            ),
            (
                serde_json::json!({ "readyToUse": false, "phase": "Failed",
                                 "error": { "message": "no space left" } }),
                false,
            ),
            (serde_json::json!({ "phase": "failed" }), false),
            (serde_json::json!({ "phase": "InProgress" }), false),
            (serde_json::Value::Null, false),
        ] {
            let full = watched(status, deleting);
            let record = SnapshotRecord::record(&full).expect("a scheduled backup");
            let read = record.object("muni-talsi", "web-20250602-0200");
            let (full, read) = (std::slice::from_ref(&full), std::slice::from_ref(&read));
            assert_eq!(status::snapshot_infos(read), status::snapshot_infos(full));
            assert_eq!(status::backups(read), status::backups(full));
            assert_eq!(
                read[0].metadata.labels,
                full[0].metadata.labels.clone().map(|mut l| {
                    l.retain(|k, _| k == SERVER_LABEL || k == BACKUP_LABEL);
                    l
                })
            );
            assert_eq!(
                read[0].metadata.deletion_timestamp,
                full[0].metadata.deletion_timestamp
            );
            assert_eq!(
                read[0]
                    .status
                    .as_ref()
                    .map(|s| (&s.phase, s.ready_to_use, &s.creation_time)),
                full[0]
                    .status
                    .as_ref()
                    .map(|s| (&s.phase, s.ready_to_use, &s.creation_time))
            );
        }
    }
}
