//! From a custom resource to the REST body the control plane should hold: the tenant named,
//! Secret references replaced by their values, endpoint names by ids, the ownership mark added.
//! Each kind says here what it references, so the controller knows which Secret or endpoint
//! changes concern it.

use super::crd::{EventType, SyncStatus, WebhookEndpoint, WebhookSource};
use super::reconcile::{Desired, Unresolved};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::future::Future;

/// Reads what a resource references, in its namespace.
pub struct Resolver {
    /// Secrets of the namespace.
    pub secrets: Api<Secret>,
    /// WebhookEndpoints of the namespace.
    pub endpoints: Api<WebhookEndpoint>,
}

impl Resolver {
    /// The value of `<secret-name>/<key>`.
    async fn secret(&self, reference: &str) -> Result<String, Unresolved> {
        let (name, key) = reference.split_once('/').ok_or_else(|| Unresolved {
            reason: "InvalidSecretReference",
            message: format!("`{reference}` is not `<secret-name>/<key>`"),
        })?;
        let secret = match self.secrets.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Unresolved {
                    reason: "SecretNotFound",
                    message: format!("Secret {name} not found"),
                })
            }
            Err(e) => {
                return Err(Unresolved {
                    reason: "SecretUnreadable",
                    message: format!("Secret {name}: {e}"),
                })
            }
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| Unresolved {
                reason: "SecretKeyNotFound",
                message: format!("Secret {name} has no key {key}"),
            })?;
        String::from_utf8(bytes).map_err(|_| Unresolved {
            reason: "SecretNotText",
            message: format!("Secret {name} key {key} is not UTF-8 text"),
        })
    }

    /// The control-plane id of the WebhookEndpoint `name`.
    async fn endpoint_id(&self, name: &str) -> Result<String, Unresolved> {
        match self.endpoints.get_opt(name).await {
            Ok(Some(e)) => e.status.and_then(|s| s.id).ok_or_else(|| Unresolved {
                reason: "EndpointNotReady",
                message: format!("WebhookEndpoint {name} is not in the control plane yet"),
            }),
            Ok(None) => Err(Unresolved {
                reason: "EndpointNotFound",
                message: format!("WebhookEndpoint {name} not found"),
            }),
            Err(e) => Err(Unresolved {
                reason: "EndpointUnreadable",
                message: format!("WebhookEndpoint {name}: {e}"),
            }),
        }
    }
}

/// What the controller needs of each kind.
pub trait Managed:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The REST collection, `/v1/sources`.
    const COLLECTION: &'static str;
    /// Sources only: changes reach Envoys, and `Ready` waits for them.
    const PROPAGATES: bool = false;

    /// The status, if written.
    fn sync_status(&self) -> Option<&SyncStatus>;
    /// The tenant named by the spec.
    fn tenant(&self) -> Option<&str>;
    /// The Secrets (names) it references.
    fn secret_names(&self) -> Vec<String>;
    /// The WebhookEndpoints (names) it references.
    fn endpoint_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// The REST body, references resolved.
    fn desired(
        &self,
        tenant_id: &str,
        resolver: &Resolver,
    ) -> impl Future<Output = Result<Desired, Unresolved>> + Send;
}

/// The ownership mark of `obj`.
pub fn managed_by<K: Resource<DynamicType = ()>>(obj: &K) -> Value {
    json!({
        "manager": "kubernetes",
        "object": format!("{} {}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any()),
        "uid": obj.uid().unwrap_or_default(),
    })
}

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

fn secret_name(reference: &str) -> String {
    reference.split('/').next().unwrap_or_default().to_owned()
}

impl Managed for WebhookSource {
    const COLLECTION: &'static str = "/v1/sources";
    const PROPAGATES: bool = true;

    fn sync_status(&self) -> Option<&SyncStatus> {
        self.status.as_ref()
    }

    fn tenant(&self) -> Option<&str> {
        self.spec.tenant.as_deref()
    }

    fn secret_names(&self) -> Vec<String> {
        let mut source = self.spec.source.clone();
        source
            .secrets_mut()
            .into_iter()
            .map(|s| secret_name(s.expose()))
            .collect()
    }

    fn endpoint_names(&self) -> Vec<String> {
        self.spec
            .ingest
            .iter()
            .flat_map(|i| &i.routes)
            .flat_map(|r| r.to.iter().chain(&r.failover))
            .cloned()
            .collect()
    }

    async fn desired(&self, tenant_id: &str, resolver: &Resolver) -> Result<Desired, Unresolved> {
        let mut source = self.spec.source.clone();
        for slot in source.secrets_mut() {
            slot.0 = resolver.secret(slot.expose()).await?;
        }
        let mut ingest = self.spec.ingest.clone();
        for route in ingest.iter_mut().flat_map(|i| &mut i.routes) {
            for to in &mut route.to {
                *to = resolver.endpoint_id(to).await?;
            }
            if let Some(f) = &mut route.failover {
                *f = resolver.endpoint_id(f).await?;
            }
        }
        let mut body = json!({
            "tenant_id": tenant_id,
            "description": self.spec.description,
            "spec": source,
            "managed_by": managed_by(self),
        });
        if let Some(i) = ingest {
            body["ingest"] = serde_json::to_value(i).unwrap_or(Value::Null);
        }
        let hash = digest(&[body.to_string().as_bytes()]);
        Ok(Desired {
            body,
            hash,
            secret: None,
        })
    }
}

impl Managed for WebhookEndpoint {
    const COLLECTION: &'static str = "/v1/endpoints";

    fn sync_status(&self) -> Option<&SyncStatus> {
        self.status.as_ref()
    }

    fn tenant(&self) -> Option<&str> {
        self.spec.tenant.as_deref()
    }

    fn secret_names(&self) -> Vec<String> {
        self.spec
            .secret
            .iter()
            .map(|s| secret_name(s.expose()))
            .collect()
    }

    async fn desired(&self, tenant_id: &str, resolver: &Resolver) -> Result<Desired, Unresolved> {
        let secret = match &self.spec.secret {
            Some(r) => {
                let value = resolver.secret(r.expose()).await?;
                let d = digest(&[value.as_bytes()]);
                Some((value, d))
            }
            None => None,
        };
        let mut body = serde_json::to_value(&self.spec).unwrap_or(Value::Null);
        if let Some(map) = body.as_object_mut() {
            map.remove("tenant");
            map.remove("secret");
            map.insert("tenant_id".into(), tenant_id.into());
            map.insert("managed_by".into(), managed_by(self));
        }
        // The digest leaves the secret out: a new secret is rotated in, not a replace.
        let hash = digest(&[body.to_string().as_bytes()]);
        if let Some((value, _)) = &secret {
            // Creation takes it in the body (replace ignores it).
            body["secret"] = value.clone().into();
        }
        Ok(Desired { body, hash, secret })
    }
}

impl Managed for EventType {
    const COLLECTION: &'static str = "/v1/event_types";

    fn sync_status(&self) -> Option<&SyncStatus> {
        self.status.as_ref()
    }

    fn tenant(&self) -> Option<&str> {
        self.spec.tenant.as_deref()
    }

    fn secret_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn desired(&self, tenant_id: &str, _: &Resolver) -> Result<Desired, Unresolved> {
        let mut body = json!({
            "tenant_id": tenant_id,
            "name": self.spec.name,
            "version": self.spec.version,
            "description": self.spec.description,
            "managed_by": managed_by(self),
        });
        if let Some(s) = &self.spec.schema {
            body["schema"] = s.clone();
        }
        let hash = digest(&[body.to_string().as_bytes()]);
        Ok(Desired {
            body,
            hash,
            secret: None,
        })
    }
}
