//! An index kept from the same watch events as the controller's store of servers, so that a
//! reconcile looks up the servers of a namespace (quota arithmetic) instead of scanning every
//! server of the cluster. The servers themselves stay in the store only.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use novads_crds::VirtualServer;

/// Per group, the `(namespace, name)` of its objects; and the group of each object, so that an
/// object whose group changed leaves its old one.
#[derive(Default)]
struct Groups {
    members: HashMap<String, BTreeSet<(String, String)>>,
    group_of: HashMap<(String, String), String>,
}

impl Groups {
    fn insert(&mut self, id: (String, String), group: Option<String>) {
        self.remove(&id);
        if let Some(group) = group {
            self.members
                .entry(group.clone())
                .or_default()
                .insert(id.clone());
            self.group_of.insert(id, group);
        }
    }

    fn remove(&mut self, id: &(String, String)) {
        let Some(group) = self.group_of.remove(id) else {
            return;
        };
        if let Some(members) = self.members.get_mut(&group) {
            members.remove(id);
            if members.is_empty() {
                self.members.remove(&group);
            }
        }
    }
}

/// Objects of kind `K` by a group key (`group` of each object). Cheap to clone: clones share
/// the index.
pub struct Grouped<K> {
    group: fn(&K) -> Option<String>,
    current: Arc<RwLock<Groups>>,
    /// What a (re)listing collects until it is complete, as kube's store does, so a reconcile
    /// never counts a group half listed.
    listing: Arc<Mutex<Option<Groups>>>,
}

impl<K> Clone for Grouped<K> {
    fn clone(&self) -> Self {
        Self {
            group: self.group,
            current: self.current.clone(),
            listing: self.listing.clone(),
        }
    }
}

fn id<K: Resource>(object: &K) -> Option<(String, String)> {
    let meta = object.meta();
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

impl<K: Resource<DynamicType = ()> + Clone> Grouped<K> {
    /// An empty index grouping by `group`.
    pub fn new(group: fn(&K) -> Option<String>) -> Self {
        Self {
            group,
            current: Arc::default(),
            listing: Arc::default(),
        }
    }

    /// The index of `objects`, as after a first listing (tests and benchmarks).
    pub fn listed<'a>(
        group: fn(&K) -> Option<String>,
        objects: impl IntoIterator<Item = &'a K>,
    ) -> Self
    where
        K: 'a,
    {
        let index = Self::new(group);
        index.apply(&watcher::Event::Init);
        for object in objects {
            index.apply(&watcher::Event::InitApply(object.clone()));
        }
        index.apply(&watcher::Event::InitDone);
        index
    }

    /// Follows one watch event (after the store has applied it).
    pub fn apply(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                let (Some(id), Ok(mut current)) = (id(object), self.current.write()) else {
                    return;
                };
                if matches!(event, watcher::Event::Apply(_)) {
                    current.insert(id, (self.group)(object));
                } else {
                    current.remove(&id);
                }
            }
            watcher::Event::Init => {
                if let Ok(mut listing) = self.listing.lock() {
                    *listing = Some(Groups::default());
                }
            }
            watcher::Event::InitApply(object) => {
                let (Some(id), Ok(mut listing)) = (id(object), self.listing.lock()) else {
                    return;
                };
                if let Some(listing) = listing.as_mut() {
                    listing.insert(id, (self.group)(object));
                }
            }
            watcher::Event::InitDone => {
                let Ok(mut listing) = self.listing.lock() else {
                    return;
                };
                if let (Some(listed), Ok(mut current)) = (listing.take(), self.current.write()) {
                    *current = listed;
                }
            }
        }
    }

    /// The objects of `group`, from `store`. `None` when the index is unusable (a writer
    /// panicked): counting no objects would let a quota be overrun.
    pub fn members(&self, store: &Store<K>, group: &str) -> Option<Vec<K>> {
        let current = self.current.read().ok()?;
        Some(
            current
                .members
                .get(group)
                .into_iter()
                .flatten()
                .filter_map(|(namespace, name)| store.get(&ObjectRef::new(name).within(namespace)))
                .map(|object| (*object).clone())
                .collect(),
        )
    }
}

/// The servers of each namespace.
pub type ServersByNamespace = Grouped<VirtualServer>;

fn namespace_of(server: &VirtualServer) -> Option<String> {
    server.metadata.namespace.clone()
}

impl Default for ServersByNamespace {
    fn default() -> Self {
        Self::new(namespace_of)
    }
}

impl ServersByNamespace {
    /// The index of `servers`, as after a first listing (tests and benchmarks).
    pub fn of<'a>(servers: impl IntoIterator<Item = &'a VirtualServer>) -> Self {
        Self::listed(namespace_of, servers)
    }

    /// The servers of `namespace`, from `store`.
    pub fn servers_in(
        &self,
        store: &Store<VirtualServer>,
        namespace: &str,
    ) -> Option<Vec<VirtualServer>> {
        self.members(store, namespace)
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;

    use super::*;

    fn server(namespace: &str, name: &str) -> VirtualServer {
        let mut server = VirtualServer::new(
            name,
            serde_json::from_value(serde_json::json!({
                "image": "debian-12", "cpu": 1, "memory": "1Gi"
            }))
            .expect("spec"),
        );
        server.metadata.namespace = Some(namespace.into());
        server
    }

    fn names(servers: Option<Vec<VirtualServer>>) -> Vec<String> {
        let mut names: Vec<String> = servers
            .expect("usable")
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn follows_the_watch_events_and_a_relisting_only_when_complete() {
        let (store, mut writer) = reflector::store::<VirtualServer>();
        let index = ServersByNamespace::default();
        let mut both = |event: watcher::Event<VirtualServer>| {
            writer.apply_watcher_event(&event);
            index.apply(&event);
        };
        both(watcher::Event::Init);
        both(watcher::Event::InitApply(server("muni-talsi", "web")));
        both(watcher::Event::InitApply(server("muni-talsi", "db")));
        both(watcher::Event::InitApply(server("muni-ventspils", "web")));
        both(watcher::Event::InitDone);
        assert_eq!(names(index.servers_in(&store, "muni-talsi")), ["db", "web"]);
        assert_eq!(names(index.servers_in(&store, "muni-ventspils")), ["web"]);
        assert!(names(index.servers_in(&store, "muni-limbazi")).is_empty());

        both(watcher::Event::Apply(server("muni-talsi", "mail")));
        both(watcher::Event::Delete(server("muni-talsi", "db")));
        assert_eq!(
            names(index.servers_in(&store, "muni-talsi")),
            ["mail", "web"]
        );

        // A relisting in progress leaves the index as it was until it is complete.
        both(watcher::Event::Init);
        both(watcher::Event::InitApply(server("muni-talsi", "web")));
        assert_eq!(
            names(index.servers_in(&store, "muni-talsi")),
            ["mail", "web"]
        );
        both(watcher::Event::InitDone);
        assert_eq!(names(index.servers_in(&store, "muni-talsi")), ["web"]);
        assert!(names(index.servers_in(&store, "muni-ventspils")).is_empty());
    }
}
