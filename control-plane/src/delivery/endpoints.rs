//! The endpoints as the engine sees them: decrypted, indexed by id and by tenant, swapped whole
//! on every change (readers never wait on a rebuild).

use crate::api::EndpointRuntime;
use crate::secrets::MasterKeys;
use crate::store::{Kind, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<EndpointRuntime>>,
    by_tenant: HashMap<String, Vec<Arc<EndpointRuntime>>>,
}

/// The cache.
pub struct EndpointCache {
    store: Arc<dyn Store>,
    keys: Arc<MasterKeys>,
    index: RwLock<Arc<Index>>,
    dirty: Notify,
    /// When a miss last reloaded the index: misses reload at most once a second.
    last_miss_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl EndpointCache {
    pub(super) async fn new(
        store: Arc<dyn Store>,
        keys: Arc<MasterKeys>,
    ) -> Result<Arc<EndpointCache>, StoreError> {
        let cache = Arc::new(EndpointCache {
            store,
            keys,
            index: RwLock::default(),
            dirty: Notify::new(),
            last_miss_reload: tokio::sync::Mutex::new(None),
        });
        cache.refresh().await?;
        Ok(cache)
    }

    fn current(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An endpoint by id.
    pub fn get(&self, id: &str) -> Option<Arc<EndpointRuntime>> {
        self.current().by_id.get(id).cloned()
    }

    /// An endpoint by id, reloading the index first when it is not there: another replica may
    /// have created it since the last refresh. A delivery is only given up on as "endpoint
    /// deleted" after this.
    pub async fn get_fresh(&self, id: &str) -> Option<Arc<EndpointRuntime>> {
        if let Some(e) = self.get(id) {
            return Some(e);
        }
        let mut last = self.last_miss_reload.lock().await;
        // A reload that began after this miss was noticed answers it too.
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reloading endpoints after a miss failed");
            }
            *last = Some(std::time::Instant::now());
        }
        drop(last);
        self.get(id)
    }

    /// The tenant's enabled endpoints subscribed to `event_type`.
    pub fn subscribers(&self, tenant: &str, event_type: &str) -> Vec<Arc<EndpointRuntime>> {
        self.current()
            .by_tenant
            .get(tenant)
            .map(|v| {
                v.iter()
                    .filter(|e| e.enabled && e.subscribes(event_type))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reloads from the store.
    ///
    /// # Errors
    /// Storage failures (the previous index stays).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = crate::ids::now_ms();
        let mut index = Index::default();
        for r in self.store.list_all(Kind::Endpoint).await? {
            match crate::api::endpoint_runtime(&self.keys, &r, now) {
                Ok(e) => {
                    let e = Arc::new(e);
                    index
                        .by_tenant
                        .entry(e.tenant_id.clone())
                        .or_default()
                        .push(e.clone());
                    index.by_id.insert(e.id.clone(), e);
                }
                Err(err) => {
                    tracing::error!(endpoint = %r.id, error = %err, "endpoint skipped: its secret does not open")
                }
            }
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
        Ok(())
    }

    /// Signals a change; the refresher reloads at once.
    pub fn changed(&self) {
        self.dirty.notify_one();
    }

    pub(super) fn spawn_refresher(self: &Arc<Self>, period: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = me.upgrade() else { return };
                tokio::select! {
                    _ = c.dirty.notified() => {}
                    _ = tokio::time::sleep(period) => {}
                }
                if let Err(e) = c.refresh().await {
                    tracing::warn!(error = %e, "endpoint cache refresh failed");
                }
            }
        });
    }
}
