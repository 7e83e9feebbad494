//! Shared watches: one watch per kind and namespace, however many waits look at it. Each
//! watch is an HTTP/1.1 connection of its own and starts with a LIST, so a wait per workload
//! with its own watches on the workload, its pods and its namespace's events cost the API
//! server three connections and three lists per workload; shared, they cost three per
//! namespace.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// Signals a subscriber may miss (it falls behind) before it is handed a fresh snapshot.
const BACKLOG: usize = 64;

/// What a subscriber learns from a shared watch.
#[derive(Debug)]
pub enum Update<K> {
    /// Everything the watch holds now. `relisted`: listed after the subscription began; for
    /// [`Feeds::objects`], whose lists are consistent reads, an object it lacks is gone rather
    /// than not yet seen.
    Snapshot {
        objects: Vec<Arc<K>>,
        relisted: bool,
    },
    Applied(Arc<K>),
    Deleted(Arc<K>),
    /// The watch broke; it re-lists and reconnects by itself, with backoff.
    Interrupted(String),
}

impl<K> Update<K> {
    /// The objects seen in this update: a snapshot's, or the one applied.
    pub fn objects(self) -> Vec<Arc<K>> {
        match self {
            Update::Snapshot { objects, .. } => objects,
            Update::Applied(object) => vec![object],
            Update::Deleted(_) | Update::Interrupted(_) => Vec::new(),
        }
    }
}

#[derive(Debug)]
enum Signal<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
    Listed,
    Interrupted(String),
}

// Not derived: a derive would ask `K: Clone`, and only the `Arc` is cloned.
impl<K> Clone for Signal<K> {
    fn clone(&self) -> Self {
        match self {
            Signal::Applied(o) => Signal::Applied(o.clone()),
            Signal::Deleted(o) => Signal::Deleted(o.clone()),
            Signal::Listed => Signal::Listed,
            Signal::Interrupted(e) => Signal::Interrupted(e.clone()),
        }
    }
}

/// A watch's objects by name (`None` until its first list is done) and its signals.
struct Shared<K> {
    store: Mutex<Option<BTreeMap<String, Arc<K>>>>,
    signals: broadcast::Sender<Signal<K>>,
}

impl<K> Shared<K> {
    fn with_store<T>(&self, f: impl FnOnce(&mut Option<BTreeMap<String, Arc<K>>>) -> T) -> T {
        // A panic elsewhere cannot leave the map half-written: every change is one call.
        f(&mut self.store.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn snapshot(&self) -> Option<Vec<Arc<K>>> {
        self.with_store(|store| store.as_ref().map(|s| s.values().cloned().collect()))
    }
}

/// One shared watch; it stops when dropped, that is when its last subscriber is done.
struct Feed<K> {
    shared: Arc<Shared<K>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for Feed<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Feed<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (signals, _) = broadcast::channel(BACKLOG);
        let shared = Arc::new(Shared {
            store: Mutex::new(None),
            signals,
        });
        let events = watcher(api, config).default_backoff();
        let task = tokio::spawn(pump(events, shared.clone()));
        Feed { shared, task }
    }

    fn subscribe(self: &Arc<Self>) -> Subscription<K> {
        // Subscribed before the store is looked at: nothing falls between the two.
        let receiver = self.shared.signals.subscribe();
        let listed = self.shared.with_store(|store| store.is_some());
        Subscription {
            feed: self.clone(),
            receiver,
            snapshot_due: Some(!listed),
        }
    }
}

/// Keeps the store current and tells every subscriber what changed.
async fn pump<K: Resource>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    shared: Arc<Shared<K>>,
) {
    let mut events = std::pin::pin!(events);
    let mut listing = BTreeMap::new();
    while let Some(event) = events.next().await {
        let signal = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                listing.insert(object.name_any(), Arc::new(slim(object)));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let listed = std::mem::take(&mut listing);
                shared.with_store(|store| *store = Some(listed));
                Signal::Listed
            }
            Ok(watcher::Event::Apply(object)) => {
                let object = Arc::new(slim(object));
                let name = object.name_any();
                shared
                    .with_store(|store| store.get_or_insert_default().insert(name, object.clone()));
                Signal::Applied(object)
            }
            Ok(watcher::Event::Delete(object)) => {
                let object = Arc::new(slim(object));
                shared.with_store(|store| store.get_or_insert_default().remove(&object.name_any()));
                Signal::Deleted(object)
            }
            Err(e) => Signal::Interrupted(e.to_string()),
        };
        // Nobody listening is fine: a later subscriber starts from the store.
        let _ = shared.signals.send(signal);
    }
}

/// Waits never read managed fields; they are often half of an object's size.
fn slim<K: Resource>(mut object: K) -> K {
    object.managed_fields_mut().clear();
    object
}

/// One subscriber's view of a shared watch: a snapshot first, then each change.
pub struct Subscription<K> {
    feed: Arc<Feed<K>>,
    receiver: broadcast::Receiver<Signal<K>>,
    /// A snapshot is owed (on subscribing, after a re-list, after falling behind); `true` when
    /// it must come from a list made after the subscription began.
    snapshot_due: Option<bool>,
}

impl<K> Subscription<K> {
    /// The next update; pending forever if the watch has stopped (the deploy's deadline ends a
    /// wait, not the watch).
    pub async fn next(&mut self) -> Update<K> {
        loop {
            if let Some(relisted) = self.snapshot_due
                && let Some(objects) = self.feed.shared.snapshot()
            {
                self.snapshot_due = None;
                return Update::Snapshot { objects, relisted };
            }
            match self.receiver.recv().await {
                Ok(Signal::Listed) => self.snapshot_due = Some(true),
                // A snapshot is coming: it holds these changes already.
                Ok(Signal::Applied(_) | Signal::Deleted(_)) if self.snapshot_due.is_some() => {}
                Ok(Signal::Applied(object)) => return Update::Applied(object),
                Ok(Signal::Deleted(object)) => return Update::Deleted(object),
                Ok(Signal::Interrupted(reason)) => return Update::Interrupted(reason),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.snapshot_due = Some(self.snapshot_due.unwrap_or(false));
                }
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// Which objects a feed watches: their API (`group/version/plural`) and where.
type ObjectsKey = (String, String, Scope);

/// Where the objects of a feed are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    /// Every object of the kind in the namespace.
    Namespace(String),
    /// The one cluster-scoped object of this name: the kind's every object (every CRD of the
    /// cluster, say) could be many, and large.
    Named(String),
}

/// The shared watches of one deploy: each started by its first subscriber and stopped when
/// its last one is done, so a deploy holds open only the watches its current waits need.
pub struct Feeds {
    client: Client,
    objects: Mutex<HashMap<ObjectsKey, Weak<Feed<DynamicObject>>>>,
    pods: Mutex<HashMap<String, Weak<Feed<Pod>>>>,
    warnings: Mutex<HashMap<String, Weak<Feed<Event>>>>,
}

impl Feeds {
    pub fn new(client: Client) -> Self {
        Feeds {
            client,
            objects: Mutex::default(),
            pods: Mutex::default(),
            warnings: Mutex::default(),
        }
    }

    /// The objects of one kind in `namespace`, or the cluster-scoped object `name`. Its lists
    /// are consistent reads, so a snapshot that lacks an object proves it gone.
    pub fn objects(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Subscription<DynamicObject> {
        let scope = match namespace {
            Some(ns) => Scope::Namespace(ns.to_string()),
            None => Scope::Named(name.to_string()),
        };
        let key = (resource.api_version.clone(), resource.plural.clone(), scope);
        subscribe(&self.objects, key.clone(), || {
            let config =
                watcher::Config::default().list_semantic(watcher::ListSemantic::MostRecent);
            let (api, config) = match key.2 {
                Scope::Namespace(ns) => (
                    Api::namespaced_with(self.client.clone(), &ns, resource),
                    config,
                ),
                Scope::Named(name) => (
                    Api::all_with(self.client.clone(), resource),
                    config.fields(&format!("metadata.name={name}")),
                ),
            };
            Feed::start(api, config)
        })
    }

    /// The pods of `namespace`.
    pub fn pods(&self, namespace: &str) -> Subscription<Pod> {
        subscribe(&self.pods, namespace.to_string(), || {
            let api = Api::namespaced(self.client.clone(), namespace);
            Feed::start(api, watcher::Config::default())
        })
    }

    /// The Warning events of `namespace`.
    pub fn warnings(&self, namespace: &str) -> Subscription<Event> {
        subscribe(&self.warnings, namespace.to_string(), || {
            let api = Api::namespaced(self.client.clone(), namespace);
            Feed::start(api, watcher::Config::default().fields("type=Warning"))
        })
    }
}

fn subscribe<Key, K>(
    feeds: &Mutex<HashMap<Key, Weak<Feed<K>>>>,
    key: Key,
    start: impl FnOnce() -> Feed<K>,
) -> Subscription<K>
where
    Key: Eq + Hash,
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let mut feeds = feeds.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(feed) = feeds.get(&key).and_then(Weak::upgrade) {
        return feed.subscribe();
    }
    feeds.retain(|_, feed| feed.strong_count() > 0);
    let feed = Arc::new(start());
    feeds.insert(key, Arc::downgrade(&feed));
    feed.subscribe()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn map(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                managed_fields: Some(vec![Default::default()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(update: Update<ConfigMap>) -> (String, Vec<String>) {
        let kind = match &update {
            Update::Snapshot { relisted: true, .. } => "relisted",
            Update::Snapshot {
                relisted: false, ..
            } => "snapshot",
            Update::Applied(_) => "applied",
            Update::Deleted(_) => "deleted",
            Update::Interrupted(_) => "interrupted",
        };
        let objects = match update {
            Update::Deleted(object) => vec![object],
            other => other.objects(),
        };
        let named = objects
            .iter()
            .map(|o| {
                format!(
                    "{}@{}",
                    o.name_any(),
                    o.resource_version().unwrap_or_default()
                )
            })
            .collect();
        (kind.to_string(), named)
    }

    /// A feed driven by `events` instead of a watch.
    fn fed(
        events: tokio::sync::mpsc::UnboundedReceiver<watcher::Event<ConfigMap>>,
    ) -> Arc<Feed<ConfigMap>> {
        let (signals, _) = broadcast::channel(4);
        let shared = Arc::new(Shared {
            store: Mutex::new(None),
            signals,
        });
        let events = tokio_stream_of(events).map(Ok);
        let task = tokio::spawn(pump(events, shared.clone()));
        Arc::new(Feed { shared, task })
    }

    fn tokio_stream_of<T>(
        mut receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }

    /// Lets the pump run until the store satisfies `done`.
    async fn stored_until(
        feed: &Feed<ConfigMap>,
        done: impl Fn(Option<&Vec<Arc<ConfigMap>>>) -> bool,
    ) {
        while !done(feed.shared.snapshot().as_ref()) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_store_then_each_change_and_a_relist_proves_absence() {
        let (send, events) = tokio::sync::mpsc::unbounded_channel();
        let feed = fed(events);
        // Subscribed before the first list: the list comes after it, so it is a relist.
        let mut early = feed.subscribe();
        send.send(watcher::Event::Init).unwrap();
        send.send(watcher::Event::InitApply(map("a", "1"))).unwrap();
        send.send(watcher::Event::InitDone).unwrap();
        assert_eq!(
            names(early.next().await),
            ("relisted".into(), vec!["a@1".into()])
        );

        // Subscribed once listed: the store as it is, which proves nothing absent.
        let mut late = feed.subscribe();
        assert_eq!(
            names(late.next().await),
            ("snapshot".into(), vec!["a@1".into()])
        );

        send.send(watcher::Event::Apply(map("b", "2"))).unwrap();
        send.send(watcher::Event::Delete(map("a", "3"))).unwrap();
        for subscription in [&mut early, &mut late] {
            assert_eq!(
                names(subscription.next().await),
                ("applied".into(), vec!["b@2".into()])
            );
            assert_eq!(
                names(subscription.next().await),
                ("deleted".into(), vec!["a@3".into()])
            );
        }
        let stored = feed.shared.snapshot().unwrap();
        assert_eq!(stored.len(), 1);
        assert!(
            stored[0].managed_fields().is_empty(),
            "managed fields are not kept"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_a_fresh_snapshot() {
        let (send, events) = tokio::sync::mpsc::unbounded_channel();
        let feed = fed(events);
        send.send(watcher::Event::Init).unwrap();
        send.send(watcher::Event::InitDone).unwrap();
        stored_until(&feed, |stored| stored.is_some()).await;
        let mut subscription = feed.subscribe();
        // More changes than the backlog of 4 holds, none read yet.
        for version in 1..=10 {
            send.send(watcher::Event::Apply(map("a", &version.to_string())))
                .unwrap();
        }
        stored_until(&feed, |stored| {
            stored.and_then(|s| s.first()?.resource_version()) == Some("10".into())
        })
        .await;
        // The store as it was when subscribing may come first; the lag ends in the latest.
        let mut last = names(subscription.next().await);
        while last.1 != vec!["a@10".to_string()] {
            last = names(subscription.next().await);
        }
        assert_eq!(last.0, "snapshot");
    }
}
