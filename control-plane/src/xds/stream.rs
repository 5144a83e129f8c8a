//! One xDS stream (ADS or ECDS, the same state-of-the-world protocol): send the current
//! snapshot when asked and whenever it changes, and record what the Envoy did with it.

use super::registry::Registry;
use super::snapshot::{Publisher, EXTENSION_CONFIG_TYPE};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// The response stream handed to tonic.
pub type ResponseStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

/// Starts serving one stream.
pub fn serve(
    inbound: Streaming<DiscoveryRequest>,
    publisher: Arc<Publisher>,
    registry: Arc<Registry>,
) -> ResponseStream {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(run(inbound, tx, publisher, registry));
    ReceiverStream::new(rx)
}

struct Sent {
    nonce: String,
    version: String,
}

async fn run(
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    publisher: Arc<Publisher>,
    registry: Arc<Registry>,
) {
    let mut snapshots = publisher.subscribe();
    let mut node: Option<String> = None;
    // A node whose metadata names a tenant gets that tenant's sources only.
    let mut tenant: Option<String> = None;
    // Resource names the Envoy subscribed to; None until its first request.
    let mut names: Option<Vec<String>> = None;
    let mut last: Option<Sent> = None;
    let mut nonce = 0u64;
    loop {
        let send_now = tokio::select! {
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(node = ?node, error = %e, "xds stream ended");
                        break;
                    }
                };
                if node.is_none() {
                    let (id, cluster) = req.node.as_ref().map(|n| (n.id.clone(), n.cluster.clone())).unwrap_or_default();
                    tenant = req.node.as_ref().and_then(tenant_of);
                    registry.connected(&id, &cluster, tenant.as_deref());
                    tracing::info!(node = %id, cluster = %cluster, tenant = ?tenant, "envoy connected");
                    node = Some(id);
                }
                let id = node.as_deref().unwrap_or_default();
                registry.seen(id);
                if req.type_url != EXTENSION_CONFIG_TYPE {
                    // Only the hookmesh filter's configuration is served here.
                    continue;
                }
                let answered = last.as_ref().filter(|s| s.nonce == req.response_nonce);
                if let Some(err) = &req.error_detail {
                    let version = answered.map_or(req.version_info.as_str(), |s| s.version.as_str());
                    tracing::warn!(node = %id, version = %version, error = %err.message, "envoy refused the filter configuration (it keeps its previous one)");
                    registry.nack(id, version, &err.message);
                    names = Some(req.resource_names);
                    false
                } else if let Some(sent) = answered {
                    registry.ack(id, &sent.version);
                    let resubscribed = names.as_ref() != Some(&req.resource_names);
                    names = Some(req.resource_names);
                    resubscribed
                } else if req.response_nonce.is_empty() {
                    // A new subscription, or a reconnect that resumes from its last version.
                    names = Some(req.resource_names);
                    true
                } else {
                    // An answer to an older response: a newer one is already on its way.
                    false
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                names.is_some()
            }
        };
        if !send_now {
            continue;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        let (version, resource) = snapshot.scoped(tenant.as_deref());
        let wanted = names
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.iter().any(|x| x == publisher.filter_name()));
        nonce += 1;
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: if wanted { vec![resource] } else { Vec::new() },
            type_url: EXTENSION_CONFIG_TYPE.into(),
            nonce: nonce.to_string(),
            ..Default::default()
        };
        last = Some(Sent {
            nonce: nonce.to_string(),
            version,
        });
        if tx.send(Ok(response)).await.is_err() {
            break;
        }
    }
    if let Some(id) = &node {
        registry.disconnected(id);
        tracing::info!(node = %id, "envoy disconnected");
    }
}

/// The tenant named by the node metadata key `hookmesh.tenant`, if any (empty means all).
fn tenant_of(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match node
        .metadata
        .as_ref()?
        .fields
        .get("hookmesh.tenant")?
        .kind
        .as_ref()?
    {
        Kind::StringValue(t) if !t.is_empty() => Some(t.clone()),
        _ => None,
    }
}
