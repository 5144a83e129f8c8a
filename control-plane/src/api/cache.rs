//! Short-lived caches on the request path: API keys by hash and compiled event-type schemas.
//! A change made through this process clears them at once; other replicas see it within the TTL.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A map whose entries expire.
pub struct Ttl<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> Ttl<K, V> {
    /// Entries live `ttl`.
    pub fn new(ttl: Duration) -> Ttl<K, V> {
        Ttl {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// A live entry.
    pub fn get(&self, k: &K) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(k)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// Stores an entry (the map is bounded: a full map is emptied first).
    pub fn put(&self, k: K, v: V) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(k, (v, Instant::now()));
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The caches of one process.
pub struct Caches {
    /// API key rows by hash (`None`: no such key).
    pub keys: Ttl<String, Option<crate::store::Resource>>,
    /// The schema of the newest version of an event type, by (tenant, name).
    pub schemas: Ttl<(String, String), Option<Arc<jsonschema::Validator>>>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            keys: Ttl::new(Duration::from_secs(2)),
            schemas: Ttl::new(Duration::from_secs(5)),
        }
    }
}
