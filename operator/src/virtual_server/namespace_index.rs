//! The names of the VirtualServers in each namespace, kept from the same watch events as the
//! controller's store: a reconcile's quota arithmetic looks up its namespace's servers instead
//! of scanning every server of the cluster. The objects themselves stay in the store only.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use novads_crds::VirtualServer;

type Names = HashMap<String, BTreeSet<String>>;

/// Server names per namespace. Cheap to clone: clones share the index.
#[derive(Clone, Default)]
pub struct ServersByNamespace {
    current: Arc<RwLock<Names>>,
    /// What a (re)listing collects until it is complete, as kube's store does, so a reconcile
    /// never counts a namespace half listed.
    listing: Arc<Mutex<Option<Names>>>,
}

fn key(server: &VirtualServer) -> Option<(String, String)> {
    Some((
        server.metadata.namespace.clone()?,
        server.metadata.name.clone()?,
    ))
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
            watcher::Event::Apply(server) | watcher::Event::Delete(server) => {
                let Some((namespace, name)) = key(server) else {
                    return;
                };
                let Ok(mut current) = self.current.write() else {
                    return;
                };
                let names = current.entry(namespace.clone()).or_default();
                if matches!(event, watcher::Event::Apply(_)) {
                    names.insert(name);
                } else {
                    names.remove(&name);
                    if names.is_empty() {
                        current.remove(&namespace);
                    }
                }
            }
            watcher::Event::Init => {
                if let Ok(mut listing) = self.listing.lock() {
                    *listing = Some(Names::new());
                }
            }
            watcher::Event::InitApply(server) => {
                let (Some((namespace, name)), Ok(mut listing)) = (key(server), self.listing.lock())
                else {
                    return;
                };
                if let Some(listing) = listing.as_mut() {
                    listing.entry(namespace).or_default().insert(name);
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
    /// panicked): counting no servers would let the quota be overrun.
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
