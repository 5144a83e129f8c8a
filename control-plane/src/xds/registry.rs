//! Every Envoy seen on an xDS stream: when, and what it did with our configuration.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A refused configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Nack {
    /// The version it refused.
    pub version: String,
    /// Envoy's error.
    pub error: String,
    /// RFC 3339.
    pub at: String,
}

/// What the control plane knows about one Envoy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct EnvoyStatus {
    /// Envoy's node id.
    pub node_id: String,
    /// Envoy's node cluster.
    pub cluster: String,
    /// Whether a stream is open now.
    pub connected: bool,
    /// RFC 3339: when the current (or last) stream opened.
    pub connected_since: String,
    /// RFC 3339: last message received.
    pub last_seen: String,
    /// The last version it acknowledged.
    pub acked_version: Option<String>,
    /// Its last refusal, if any.
    pub last_nack: Option<Nack>,
    /// The tenant it serves, when its node metadata (`hookmesh.tenant`) names one.
    pub tenant: Option<String>,
    #[serde(skip)]
    streams: u32,
}

/// The registry; std `Mutex` because every critical section is a map update with no await.
#[derive(Debug, Default)]
pub struct Registry(Mutex<BTreeMap<String, EnvoyStatus>>);

fn now() -> String {
    crate::ids::rfc3339(crate::ids::now_ms())
}

impl Registry {
    fn with(&self, node: &str, f: impl FnOnce(&mut EnvoyStatus)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get_mut(node) {
            f(s);
        }
    }

    /// A stream from `node` opened.
    pub fn connected(&self, node: &str, cluster: &str, tenant: Option<&str>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(node.to_owned()).or_insert_with(|| EnvoyStatus {
            node_id: node.to_owned(),
            cluster: String::new(),
            connected: false,
            connected_since: String::new(),
            last_seen: String::new(),
            acked_version: None,
            last_nack: None,
            tenant: None,
            streams: 0,
        });
        s.cluster = cluster.to_owned();
        s.tenant = tenant.map(str::to_owned);
        if s.streams == 0 {
            s.connected_since = now();
        }
        s.streams += 1;
        s.connected = true;
        s.last_seen = now();
    }

    /// A message from `node` arrived.
    pub fn seen(&self, node: &str) {
        self.with(node, |s| s.last_seen = now());
    }

    /// `node` acknowledged `version`.
    pub fn ack(&self, node: &str, version: &str) {
        self.with(node, |s| s.acked_version = Some(version.to_owned()));
    }

    /// `node` refused `version`.
    pub fn nack(&self, node: &str, version: &str, error: &str) {
        self.with(node, |s| {
            s.last_nack = Some(Nack {
                version: version.to_owned(),
                error: error.to_owned(),
                at: now(),
            })
        });
    }

    /// A stream from `node` closed.
    pub fn disconnected(&self, node: &str) {
        self.with(node, |s| {
            s.streams = s.streams.saturating_sub(1);
            s.connected = s.streams > 0;
        });
    }

    /// Every Envoy, by node id.
    pub fn list(&self) -> Vec<EnvoyStatus> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
