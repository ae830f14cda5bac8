//! An index kept from the same watch events as the controller's store of servers, so that a
//! reconcile looks up the servers of a namespace (quota arithmetic) instead of scanning every
//! server of the cluster. The servers themselves stay in the store only.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use compact_str::CompactString;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use novads_crds::VirtualServer;

/// Per namespace, the names of its servers (a server never changes namespace: it is part of
/// its identity).
type Names = HashMap<CompactString, BTreeSet<CompactString>>;

/// The servers of each namespace. Cheap to clone: clones share the index.
#[derive(Clone, Default)]
pub struct ServersByNamespace {
    current: Arc<RwLock<Names>>,
    /// What a (re)listing collects until it is complete, as kube's store does, so a reconcile
    /// never counts a namespace half listed.
    listing: Arc<Mutex<Option<Names>>>,
}

fn id(server: &VirtualServer) -> Option<(&str, &str)> {
    Some((
        server.metadata.namespace.as_deref()?,
        server.metadata.name.as_deref()?,
    ))
}

fn insert(names: &mut Names, (namespace, name): (&str, &str)) {
    match names.get_mut(namespace) {
        Some(servers) => {
            servers.insert(name.into());
        }
        None => {
            names.insert(namespace.into(), BTreeSet::from([name.into()]));
        }
    }
}

impl ServersByNamespace {
    /// The index of `servers`, as after a first listing (tests and benchmarks).
    pub fn of<'a>(servers: impl IntoIterator<Item = &'a VirtualServer>) -> Self {
        let index = Self::default();
        index.apply(&watcher::Event::Init);
        for server in servers {
            index.apply(&watcher::Event::InitApply(server.clone()));
        }
        index.apply(&watcher::Event::InitDone);
        index
    }

    /// Follows one watch event (after the store has applied it).
    pub fn apply(&self, event: &watcher::Event<VirtualServer>) {
        match event {
            watcher::Event::Apply(server) => {
                if let (Some(id), Ok(mut current)) = (id(server), self.current.write()) {
                    insert(&mut current, id);
                }
            }
            watcher::Event::Delete(server) => {
                let (Some((namespace, name)), Ok(mut current)) = (id(server), self.current.write())
                else {
                    return;
                };
                if let Some(servers) = current.get_mut(namespace) {
                    servers.remove(name);
                    if servers.is_empty() {
                        current.remove(namespace);
                    }
                }
            }
            watcher::Event::Init => {
                if let Ok(mut listing) = self.listing.lock() {
                    *listing = Some(Names::default());
                }
            }
            watcher::Event::InitApply(server) => {
                if let (Some(id), Ok(mut listing)) = (id(server), self.listing.lock())
                    && let Some(listing) = listing.as_mut()
                {
                    insert(listing, id);
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

    /// The servers of `namespace`, from `store`. `None` when the index is unusable (a writer
    /// panicked): counting no servers would let a quota be overrun.
    pub fn servers_in(
        &self,
        store: &Store<VirtualServer>,
        namespace: &str,
    ) -> Option<Vec<VirtualServer>> {
        let current = self.current.read().ok()?;
        Some(
            current
                .get(namespace)
                .into_iter()
                .flatten()
                .filter_map(|name| store.get(&ObjectRef::new(name).within(namespace)))
                .map(|server| (*server).clone())
                .collect(),
        )
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
