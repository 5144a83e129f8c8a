//! The configuration snapshot pushed to every Envoy: the stored sources compiled into the
//! filter's `FilterConfig`, wrapped in the Wasm filter's ECDS resource.
//!
//! Rebuilt on every source change (bursts coalesced) and every two seconds, so replicas that
//! share a PostgreSQL database converge too. A configuration that does not compile is never
//! published: the previous snapshot keeps serving and the failure is logged.

use crate::secrets::MasterKeys;
use crate::store::{Kind, Store};
use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, AsyncDataSource, DataSource, HttpUri, RemoteDataSource,
    TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, PluginConfig, VmConfig};
use envoy_types::pb::google::protobuf::{Any, BoolValue, StringValue};
use hookmesh_filter::config::{DefaultAction, FilterConfig, NetworkConfig};
use prost::Message;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Type URL of ECDS resources.
pub const EXTENSION_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// Where Envoy loads the filter module from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// A file on the Envoy's host (sidecars on the same machine, or a mounted volume).
    File(String),
    /// Fetched over HTTP by Envoy, checked against its SHA-256.
    Remote {
        /// URL of the `.wasm`.
        url: String,
        /// Hex SHA-256 of the module.
        sha256: String,
        /// Envoy cluster that reaches the URL's host.
        cluster: String,
    },
}

/// What goes into every snapshot besides the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsSettings {
    /// ECDS resource name: the `name` of the filter in the Envoy listener.
    pub filter_name: String,
    /// The filter module.
    pub module: ModuleSource,
    /// Requests matching no source.
    pub default_action: DefaultAction,
    /// Trusted proxies in front of the Envoys.
    pub trusted_hops: u8,
}

impl Default for XdsSettings {
    fn default() -> Self {
        XdsSettings {
            filter_name: "hookmesh".into(),
            module: ModuleSource::File("hookmesh_filter.wasm".into()),
            default_action: DefaultAction::Reject,
            trusted_hops: 0,
        }
    }
}

/// One published configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Content hash: identical content gives the same version on every replica.
    pub version: String,
    /// The `TypedExtensionConfig` as sent.
    pub resource: Any,
    /// The filter configuration inside (with secrets: never log it).
    pub filter_config: FilterConfig,
    /// The tenant of each source, in `filter_config.sources` order.
    pub tenants: Vec<String>,
    /// The id and version of each source resource, in the same order.
    pub sources: Vec<(String, i64)>,
    settings: XdsSettings,
}

impl Snapshot {
    /// The version and resource for an Envoy that serves one tenant only (its node metadata
    /// names it), or for every tenant.
    pub fn scoped(&self, tenant: Option<&str>) -> (String, Any) {
        let Some(tenant) = tenant else {
            return (self.version.clone(), self.resource.clone());
        };
        let sources = self
            .filter_config
            .sources
            .iter()
            .zip(&self.tenants)
            .filter(|(_, t)| *t == tenant)
            .map(|(s, _)| s.clone())
            .collect();
        let config = FilterConfig {
            sources,
            ..self.filter_config.clone()
        };
        let json = serde_json::to_string(&config).unwrap_or_default();
        let resource = extension_config(&self.settings, &json);
        (content_version(&resource), resource)
    }
}

fn content_version(resource: &Any) -> String {
    hex::encode(&Sha256::digest(&resource.value)[..8])
}

/// Building or publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading sources.
    #[error("reading sources: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A source's secrets did not open.
    #[error("opening the secrets of {id}: {message}")]
    Secrets {
        /// Source id.
        id: String,
        /// Why.
        message: String,
    },
    /// The filter would refuse the configuration.
    #[error("the configuration does not compile: {0}")]
    Invalid(#[from] hookmesh_filter::ConfigError),
}

/// Keeps the current snapshot and tells every xDS stream when it changes.
pub struct Publisher {
    store: Arc<dyn Store>,
    keys: Arc<MasterKeys>,
    settings: XdsSettings,
    tx: watch::Sender<Arc<Snapshot>>,
    dirty: Notify,
    /// The published version and the source versions whose content it carries. A rebuild that
    /// changes versions but not content publishes nothing new, yet still records them here.
    applied: std::sync::Mutex<Applied>,
}

/// The published configuration version and which source versions it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The published version.
    pub version: String,
    /// Source id → resource version, for every source in it.
    pub sources: std::collections::BTreeMap<String, i64>,
}

impl Applied {
    fn of(s: &Snapshot) -> Applied {
        Applied {
            version: s.version.clone(),
            sources: s.sources.iter().cloned().collect(),
        }
    }
}

impl Publisher {
    /// Builds the first snapshot from the store.
    ///
    /// # Errors
    /// When the stored sources cannot be read, opened or compiled.
    pub async fn new(
        store: Arc<dyn Store>,
        keys: Arc<MasterKeys>,
        settings: XdsSettings,
    ) -> Result<Arc<Publisher>, SnapshotError> {
        let first = build(&*store, &keys, &settings).await?;
        let applied = std::sync::Mutex::new(Applied::of(&first));
        let (tx, _) = watch::channel(Arc::new(first));
        Ok(Arc::new(Publisher {
            store,
            keys,
            settings,
            tx,
            dirty: Notify::new(),
            applied,
        }))
    }

    /// The ECDS resource name.
    pub fn filter_name(&self) -> &str {
        &self.settings.filter_name
    }

    /// Signals that sources changed; the refresher rebuilds shortly.
    pub fn changed(&self) {
        self.dirty.notify_one();
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// The published version with the source versions it carries, read together.
    pub fn applied(&self) -> Applied {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Rebuilds and publishes if the content changed; returns whether it did.
    ///
    /// # Errors
    /// Build failures; the previous snapshot stays published.
    pub async fn rebuild(&self) -> Result<bool, SnapshotError> {
        let next = build(&*self.store, &self.keys, &self.settings).await?;
        let changed = self.tx.borrow().version != next.version;
        let applied = Applied::of(&next);
        if changed {
            tracing::info!(version = %next.version, sources = next.filter_config.sources.len(), "publishing filter configuration");
            self.tx.send_replace(Arc::new(next));
        }
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = applied;
        Ok(changed)
    }

    /// Rebuilds after each change signal (coalescing bursts) and every `period`, until dropped.
    pub fn spawn_refresher(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(p) = me.upgrade() else { return };
                tokio::select! {
                    _ = p.dirty.notified() => {}
                    _ = tokio::time::sleep(period) => {}
                }
                // Let the rest of a burst of changes land first.
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Err(e) = p.rebuild().await {
                    tracing::error!(error = %e, "not publishing: keeping the previous filter configuration");
                }
            }
        })
    }
}

async fn build(
    store: &dyn Store,
    keys: &MasterKeys,
    settings: &XdsSettings,
) -> Result<Snapshot, SnapshotError> {
    let mut sources = Vec::new();
    let mut tenants = Vec::new();
    let mut versions = Vec::new();
    for r in store.list_all(Kind::Source).await? {
        tenants.push(r.tenant_id.clone());
        versions.push((r.id.clone(), r.version));
        let spec = crate::api::open_source_spec(keys, &r).map_err(|e| SnapshotError::Secrets {
            id: r.id.clone(),
            message: e.to_string(),
        })?;
        sources.push(spec);
    }
    let filter_config = FilterConfig {
        sources,
        default_action: settings.default_action,
        network: NetworkConfig {
            trusted_hops: settings.trusted_hops,
        },
        ingest_token: Some(keys.ingest_token().into()),
    };
    filter_config.compile()?;
    let json = serde_json::to_string(&filter_config).map_err(|e| SnapshotError::Secrets {
        id: "-".into(),
        message: e.to_string(),
    })?;
    let resource = extension_config(settings, &json);
    let version = content_version(&resource);
    Ok(Snapshot {
        version,
        resource,
        filter_config,
        tenants,
        sources: versions,
        settings: settings.clone(),
    })
}

fn extension_config(settings: &XdsSettings, json: &str) -> Any {
    let code = match &settings.module {
        ModuleSource::File(path) => async_data_source::Specifier::Local(DataSource {
            specifier: Some(data_source::Specifier::Filename(path.clone())),
            ..Default::default()
        }),
        ModuleSource::Remote {
            url,
            sha256,
            cluster,
        } => async_data_source::Specifier::Remote(RemoteDataSource {
            http_uri: Some(HttpUri {
                uri: url.clone(),
                timeout: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                http_upstream_type: Some(
                    envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType::Cluster(
                        cluster.clone(),
                    ),
                ),
            }),
            sha256: sha256.clone(),
            ..Default::default()
        }),
    };
    let plugin = PluginConfig {
        name: settings.filter_name.clone(),
        root_id: "hookmesh".into(),
        // The same vm_id on every update keeps the VMs, and so the rate-limit state.
        vm: Some(plugin_config::Vm::VmConfig(VmConfig {
            vm_id: "hookmesh".into(),
            runtime: "envoy.wasm.runtime.v8".into(),
            code: Some(AsyncDataSource {
                specifier: Some(code),
            }),
            ..Default::default()
        })),
        configuration: Some(Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: StringValue {
                value: json.to_owned(),
            }
            .encode_to_vec(),
        }),
        // Without it a headers-phase Pause never reaches the body callback (ENVOY-NOTES.md);
        // Istio's WasmPlugin cannot set it, which is why hookmesh serves ECDS itself.
        allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
        ..Default::default()
    };
    let wasm = Wasm {
        config: Some(plugin),
    };
    let typed = TypedExtensionConfig {
        name: settings.filter_name.clone(),
        typed_config: Some(Any {
            type_url: WASM_TYPE.into(),
            value: wasm.encode_to_vec(),
        }),
    };
    Any {
        type_url: EXTENSION_CONFIG_TYPE.into(),
        value: typed.encode_to_vec(),
    }
}
