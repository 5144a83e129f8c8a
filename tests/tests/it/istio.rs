//! The Istio route of k8s/istio: the filter exactly as `gateway-envoyfilter.yaml` inserts it,
//! with its configuration from the control plane's ECDS service (not ADS: in Istio, ADS is
//! istiod's), in a real Envoy listener.

use hookmesh_e2e::*;
use hookmesh_filter::{sign, SchemeName, SignInput};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BODY: &[u8] = br#"{"action":"opened"}"#;

fn github_post(port: u16, secret: &str) -> u16 {
    let input = SignInput {
        body: BODY,
        id: "",
        timestamp: 0,
        url: None,
        method: "POST",
    };
    let headers = sign(SchemeName::Github, secret, None, &input).unwrap();
    send_raw(
        port,
        None,
        &http1_request("POST", "/gh", "hooks.test", &headers, BODY),
    )
    .map_or(0, |r| r.status)
}

/// The HTTP filter the EnvoyFilter inserts, with Istio's outbound cluster name for the control
/// plane replaced by `cluster`.
fn envoyfilter_http_filter(cluster: &str) -> Value {
    let path = root().join("k8s/istio/gateway-envoyfilter.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let patch = &doc["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "HTTP_FILTER");
    assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    let text = patch["patch"]["value"].to_string().replace(
        "outbound|18000||hookmesh.hookmesh-system.svc.cluster.local",
        cluster,
    );
    serde_json::from_str(&text).unwrap()
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

/// The sidecar variant inserts the same filter, and the hub route targets the control plane's
/// ingest port as k8s/deploy's Service names it.
#[test]
fn the_istio_manifests_agree_with_each_other_and_the_deployment() {
    let gateway = yaml("k8s/istio/gateway-envoyfilter.yaml");
    let sidecar = yaml("k8s/istio/sidecar-envoyfilter.yaml");
    assert_eq!(
        gateway["spec"]["configPatches"][0]["patch"],
        sidecar["spec"]["configPatches"][0]["patch"]
    );
    assert_eq!(
        sidecar["spec"]["configPatches"][0]["match"]["context"],
        "SIDECAR_INBOUND"
    );
    let hub = yaml("k8s/istio/hub-virtualservice.yaml");
    let to = &hub["spec"]["http"][0]["route"][0]["destination"];
    let deploy = std::fs::read_to_string(root().join("k8s/deploy/control-plane.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&deploy).unwrap();
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(
        to["host"],
        format!(
            "{}.hookmesh-system.svc.cluster.local",
            service["metadata"]["name"].as_str().unwrap()
        )
    );
    let ingest = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["targetPort"] == "ingest")
        .unwrap();
    assert_eq!(to["port"]["number"], ingest["port"]);
    let xds = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["targetPort"] == "xds")
        .unwrap();
    let cluster = gateway["spec"]["configPatches"][0]["patch"]["value"]["config_discovery"]
        ["config_source"]["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"]
        .clone();
    assert_eq!(
        cluster,
        format!(
            "outbound|{}||hookmesh.hookmesh-system.svc.cluster.local",
            xds["port"]
        )
    );
}

#[test]
fn the_istio_envoyfilter_gets_the_filter_from_the_control_planes_ecds() {
    let cp = ControlPlane::start();
    let tenant = cp.tenant("istio");
    let source = json!({"name": "gh", "match": {"path_prefix": "/gh"},
                        "verify": {"scheme": "github", "secrets": ["gh-secret"]}});
    cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": tenant, "spec": source})),
        201,
    );

    let app = Receiver::start();
    let (port, admin_port) = (free_port(), free_port());
    let router = json!({"name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}});
    let bootstrap = json!({
        "node": {"id": "istio-ingressgateway", "cluster": "istio-ingressgateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "use_remote_address": true,
                        "http_filters": [envoyfilter_http_filter("hookmesh_xds"), router],
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]}
                    }
                }]}]
            }],
            "clusters": [
                {"name": "app", "type": "STATIC", "connect_timeout": "2s",
                 "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": app.port}}}}]}]}},
                // Stands in for Istio's outbound cluster of the control plane's Service.
                {"name": "hookmesh_xds", "type": "STATIC", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": "hookmesh_xds", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": cp.xds_port}}}}]}]}}
            ]
        }
    });
    let envoy = Envoy::with_bootstrap(&bootstrap.to_string(), port, admin_port);
    let start = Instant::now();
    while github_post(envoy.port, "gh-secret") != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the filter never verified:\n{}",
            envoy.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(github_post(envoy.port, "forged"), 401);
    assert_eq!(
        app.received().len(),
        1,
        "only the genuine webhook reached the app"
    );
    // The control plane saw this Envoy on its ECDS stream.
    let envoys = cp.json("GET", "/v1/envoys", None, 200);
    assert_eq!(envoys["data"][0]["node_id"], "istio-ingressgateway");
}
