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
