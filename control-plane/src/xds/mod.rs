//! The xDS management server: ADS and the standalone ECDS service, serving the hookmesh filter's
//! configuration (`TypedExtensionConfig`) to every Envoy on its own port.
//!
//! State of the world, one resource: the whole filter configuration is small, so every change
//! sends all of it. Envoy validates it (`on_configure`) and ACKs or NACKs; a NACK leaves the
//! previous configuration serving there and is shown in `GET /v1/envoys`.

mod registry;
mod snapshot;
mod stream;

pub use registry::{EnvoyStatus, Nack, Registry};
pub use snapshot::{ModuleSource, Publisher, Snapshot, SnapshotError, XdsSettings};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, ExtensionConfigDiscoveryServiceServer,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// The gRPC services.
#[derive(Clone)]
pub struct Xds {
    publisher: Arc<Publisher>,
    registry: Arc<Registry>,
}

impl Xds {
    /// Services over a publisher and a registry.
    pub fn new(publisher: Arc<Publisher>, registry: Arc<Registry>) -> Xds {
        Xds {
            publisher,
            registry,
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = stream::ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(stream::serve(
            request.into_inner(),
            self.publisher.clone(),
            self.registry.clone(),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "hookmesh serves state-of-the-world xDS; set api_type: GRPC",
        ))
    }
}

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for Xds {
    type StreamExtensionConfigsStream = stream::ResponseStream;
    type DeltaExtensionConfigsStream = DeltaStream;

    async fn stream_extension_configs(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        Ok(Response::new(stream::serve(
            request.into_inner(),
            self.publisher.clone(),
            self.registry.clone(),
        )))
    }

    async fn delta_extension_configs(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        Err(Status::unimplemented(
            "hookmesh serves state-of-the-world xDS; set api_type: GRPC",
        ))
    }

    async fn fetch_extension_configs(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let snapshot = self.publisher.current();
        Ok(Response::new(DiscoveryResponse {
            version_info: snapshot.version.clone(),
            resources: vec![snapshot.resource.clone()],
            type_url: snapshot::EXTENSION_CONFIG_TYPE.into(),
            ..Default::default()
        }))
    }
}

/// Serves ADS and ECDS on `listener` until `shutdown` completes.
///
/// # Errors
/// Transport failures.
pub async fn serve(
    listener: TcpListener,
    xds: Xds,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        // Notice Envoys that vanished without closing their stream.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(AggregatedDiscoveryServiceServer::new(xds.clone()))
        .add_service(ExtensionConfigDiscoveryServiceServer::new(xds))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
