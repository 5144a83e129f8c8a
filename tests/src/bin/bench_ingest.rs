//! `make bench-ingest`: the inbound hub's throughput and provider-facing latency. Webhooks
//! signed (Standard Webhooks, each with its own id) are posted through Envoy with the filter by
//! concurrent keep-alive clients; a `hub` source stores each durably (SQLite, group commit)
//! before the 200 and routes it to one endpoint on a counting receiver. Side by side, the
//! baseline: the same requests to an `edge` source on the same Envoy, verified and passed
//! straight to the receiver, nothing stored. Results in docs/benchmarks.md.

use hookmesh_e2e::*;
use hookmesh_filter::{sign, SchemeName, SignInput};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent keep-alive clients (`BENCH_CLIENTS`, default 64).
fn clients() -> usize {
    bench_setting("BENCH_CLIENTS").unwrap_or(64)
}
/// Rounds of the three paths in turn (`BENCH_ROUNDS`, default 3): each path's median round is
/// reported, so that a slow minute of a shared machine moves one round, not the result.
fn rounds() -> usize {
    bench_setting("BENCH_ROUNDS")
        .filter(|r| *r > 0)
        .unwrap_or(3)
}
/// Envoy's worker threads (`BENCH_ENVOY_WORKERS`): by default one per core, Envoy's own default
/// and what `make run` starts.
fn envoy_workers() -> u32 {
    bench_setting("BENCH_ENVOY_WORKERS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}
/// How Envoy reaches the ingest (`BENCH_INGEST`): `tcp` (loopback, the default) or `unix` (the
/// control plane's Unix socket, for an Envoy on the same host).
fn ingest_at() -> IngestAt {
    match std::env::var("BENCH_INGEST").as_deref() {
        Ok("unix") => IngestAt::fresh_socket(),
        Ok("tcp") | Err(_) => IngestAt::Port(free_port()),
        Ok(other) => panic!("BENCH_INGEST={other}: expected tcp or unix"),
    }
}
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// CPU seconds so far, or (between two readings) µs per webhook.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    control_plane: f64,
    envoy: f64,
    /// This process: the load generator and the receiver.
    bench: f64,
    /// Every process on the machine, kernel work included.
    machine: f64,
}

impl Cpu {
    fn now((cp_pid, envoy_pid): (u32, u32)) -> Cpu {
        Cpu {
            control_plane: cpu_secs(cp_pid),
            envoy: cpu_secs(envoy_pid),
            bench: cpu_secs(std::process::id()),
            machine: machine_cpu_secs(),
        }
    }

    fn per_webhook_us(self, later: Cpu, n: usize) -> Cpu {
        let per = |a: f64, b: f64| (b - a) * 1e6 / n as f64;
        Cpu {
            control_plane: per(self.control_plane, later.control_plane),
            envoy: per(self.envoy, later.envoy),
            bench: per(self.bench, later.bench),
            machine: per(self.machine, later.machine),
        }
    }
}

/// What the control plane did, counted rather than timed: the same on a fast or a slow hour
/// of a shared machine, so that a change of a few percent shows where CPU times cannot.
#[derive(Clone, Copy, Debug)]
struct Counts {
    /// Context switches of all its threads.
    switches: u64,
    /// Bytes it sent to storage (the WAL, checkpoints into the database file).
    storage_bytes: u64,
}

impl Counts {
    fn now(pid: u32) -> Counts {
        let field = |text: &str, name: &str| proc_field(text, name).unwrap_or(0);
        let switches = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .map(|s| {
                field(&s, "voluntary_ctxt_switches:") + field(&s, "nonvoluntary_ctxt_switches:")
            })
            .sum();
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        Counts {
            switches,
            storage_bytes: field(&io, "write_bytes:"),
        }
    }
}

#[derive(Debug)]
struct Run {
    /// CPU µs per webhook.
    cpu_us: Cpu,
    /// The control plane's context switches per webhook.
    switches: f64,
    /// KiB the control plane sent to storage per webhook.
    storage_kib: f64,
    accepted_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    end_to_end_per_sec: f64,
}

/// Signed requests, each with its own message id (the hub would drop repeats as duplicates).
fn signed(n: usize, prefix: &str) -> Vec<(Vec<(String, String)>, bytes::Bytes)> {
    let pad = "x".repeat(200);
    let ts = now();
    (0..n)
        .map(|i| {
            let body = json!({"type": "invoice.paid", "data": {"id": i, "customer": "cus_0123456789", "amount": 1200, "note": pad}}).to_string();
            let id = format!("{prefix}_{i}");
            let headers = sign(
                SchemeName::StandardWebhooks,
                SECRET,
                None,
                &SignInput {
                    body: body.as_bytes(),
                    id: &id,
                    timestamp: ts,
                    url: None,
                    method: "POST",
                },
            )
            .expect("sign");
            (headers, bytes::Bytes::from(body))
        })
        .collect()
}

/// The requests as HTTP/1.1 bytes, written before the clock starts: the provider's side of
/// the exchange should cost the machine as little as a provider elsewhere would.
fn serialize(
    port: u16,
    path: &str,
    requests: Vec<(Vec<(String, String)>, bytes::Bytes)>,
) -> Vec<Vec<u8>> {
    let host = format!("127.0.0.1:{port}");
    requests
        .into_iter()
        .map(|(mut headers, body)| {
            headers.push(("content-type".into(), "application/json".into()));
            http1_keep_alive_request("POST", path, &host, &headers, &body)
        })
        .collect()
}

/// Reads one response off a keep-alive connection: its status. Envoy answers with a
/// `content-length` on this path; anything else is a failed run, not a guess.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    use tokio::io::AsyncReadExt;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head not UTF-8"))?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("no status line"))?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| bad("response without content-length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    return Err(bad("connection closed mid-response"));
                }
            }
            buf.drain(..total);
            return Ok(status);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(bad("connection closed before a response"));
        }
    }
}

/// Concurrent keep-alive clients sending the requests in order; returns the seconds taken and
/// each request's latency (µs).
async fn load(port: u16, requests: Vec<Vec<u8>>) -> (f64, Vec<u32>) {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients() {
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect to Envoy");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::with_capacity(4096);
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(request) = requests.get(i) else {
                    return latencies;
                };
                let sent = Instant::now();
                stream.write_all(request).await.expect("send a request");
                let status = read_response(&mut stream, &mut buf)
                    .await
                    .expect("read a response");
                latencies.push(sent.elapsed().as_micros() as u32);
                assert_eq!(status, 200, "request {i} refused");
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    (start.elapsed().as_secs_f64(), all)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn machine_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_owned();
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user, nice, system, irq, softirq, steal: not idle or I/O wait.
            Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?)
        })
        .unwrap_or(0.0)
        / 100.0
}

async fn measure(
    (port, cp_pid, envoy_pid): (u16, u32, u32),
    path: &str,
    n: usize,
    prefix: &str,
    count: &AtomicU64,
) -> Run {
    let before = count.load(Ordering::Relaxed);
    // Signed and serialized before the CPU readings and the clock: the provider's work.
    let requests = serialize(port, path, signed(n, prefix));
    let cpu0 = Cpu::now((cp_pid, envoy_pid));
    let counts0 = Counts::now(cp_pid);
    let start = Instant::now();
    let (secs, mut latencies) = load(port, requests).await;
    // The store-only source routes nowhere: nothing to wait for.
    let delivered = if path.starts_with("/store") {
        0
    } else {
        n as u64
    };
    let total = wait_counted(count, before + delivered, start).await;
    latencies.sort_unstable();
    let counts = Counts::now(cp_pid);
    Run {
        cpu_us: cpu0.per_webhook_us(Cpu::now((cp_pid, envoy_pid)), n),
        switches: (counts.switches - counts0.switches) as f64 / n as f64,
        storage_kib: (counts.storage_bytes - counts0.storage_bytes) as f64 / 1024.0 / n as f64,
        accepted_per_sec: n as f64 / secs,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        end_to_end_per_sec: n as f64 / total,
    }
}

/// A bulk replay's pace.
struct Replay {
    webhooks: u64,
    rerun_per_sec: f64,
    delivered_per_sec: f64,
    /// The control plane's CPU µs per webhook, from the job's start until all were delivered.
    cpu_us: f64,
    switches: f64,
    storage_kib: f64,
}

/// Starts a bulk replay of everything `source` stored; returns the job's path.
/// `BENCH_REPLAY_CONCURRENCY` sets the job's `concurrency`; by default the API's own.
fn start_replay(cp: &ControlPlane, source: &str) -> String {
    let mut body = json!({"source_id": source});
    if let Some(n) = bench_setting::<u32>("BENCH_REPLAY_CONCURRENCY") {
        body["concurrency"] = json!(n);
    }
    let job = cp.json("POST", "/v1/inbound_events/replay", Some(&body), 202);
    format!("/v1/jobs/{}", job["id"].as_str().expect("a job id"))
}

/// Replays every webhook `source` stored as one bulk job; waits for the job's end and for each
/// outbound event to reach the receiver.
async fn bulk_replay(
    cp: &ControlPlane,
    source: &str,
    pids: (u32, u32),
    count: &AtomicU64,
) -> Replay {
    let before = count.load(Ordering::Relaxed);
    let cpu0 = Cpu::now(pids);
    let counts0 = Counts::now(pids.0);
    let start = Instant::now();
    let path = start_replay(cp, source);
    let done = cp.job_ended(&path).await;
    let rerun_secs = start.elapsed().as_secs_f64();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["skipped"], 0, "{done}");
    let webhooks = done["requeued"].as_u64().expect("a count");
    let total = wait_counted(count, before + webhooks, start).await;
    let counts = Counts::now(pids.0);
    let cpu = cpu0.per_webhook_us(Cpu::now(pids), webhooks as usize);
    Replay {
        webhooks,
        rerun_per_sec: webhooks as f64 / rerun_secs,
        delivered_per_sec: webhooks as f64 / total,
        cpu_us: cpu.control_plane,
        switches: (counts.switches - counts0.switches) as f64 / webhooks as f64,
        storage_kib: (counts.storage_bytes - counts0.storage_bytes) as f64
            / 1024.0
            / webhooks as f64,
    }
}

/// Arrivals measured while a delivery replay sends again everything the endpoint received.
struct Resend {
    requeued: u64,
    during: Run,
    resent_per_sec: f64,
}

/// Starts a delivery replay of the endpoint's succeeded deliveries, measures routed arrivals
/// meanwhile, then waits until every requeued delivery has reached the receiver again.
async fn resend_during_arrivals(
    cp: &ControlPlane,
    endpoint: &str,
    target: (u16, u32, u32),
    n: usize,
    count: &AtomicU64,
) -> Resend {
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    let job = cp.json(
        "POST",
        "/v1/deliveries/replay",
        Some(&json!({"endpoint_id": endpoint, "status": "succeeded"})),
        202,
    );
    let path = format!("/v1/jobs/{}", job["id"].as_str().expect("a job id"));
    let during = measure(target, "/hub/in", n, "during-resend", count).await;
    // Closed-loop clients: every arrival was accepted, and delivered soon after.
    let resent = count
        .load(Ordering::Relaxed)
        .saturating_sub(before + n as u64);
    let resent_per_sec = resent as f64 / start.elapsed().as_secs_f64();
    let done = cp.job_ended(&path).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let requeued = done["requeued"].as_u64().expect("a count");
    wait_counted(count, before + n as u64 + requeued, start).await;
    Resend {
        requeued,
        during,
        resent_per_sec,
    }
}

/// `BENCH_RETENTION` (e.g. `5s`): the control plane's `--retention`, with duplicate windows of
/// one second, so that the purge deletes webhooks, events, deliveries and attempts about as
/// fast as they arrive: the steady state of a hub that has run for longer than its retention.
fn retention() -> Option<String> {
    std::env::var("BENCH_RETENTION")
        .ok()
        .filter(|r| !r.is_empty())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_bench_binary();
    let n: usize = bench_setting("BENCH_EVENTS").unwrap_or(20_000);
    let (port, count) = counting_receiver().await;
    let mut extra_args = vec!["--allow-destination-cidrs".into(), "127.0.0.0/8".into()];
    let mut dedup = json!({});
    if let Some(r) = retention() {
        extra_args.extend(["--retention".into(), r]);
        dedup = json!({"window_secs": 1});
    }
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        log: "warn".into(),
        extra_args,
        ingest: ingest_at(),
        ..ControlPlaneOptions::default()
    });
    let tenant = cp.json("POST", "/v1/tenants", Some(&json!({"name": "bench"})), 201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = cp.create(
        "/v1/endpoints",
        &json!({"tenant_id": tenant, "url": format!("http://127.0.0.1:{port}/hub")}),
    );
    let verify = json!({"scheme": "standard_webhooks", "secrets": [SECRET]});
    cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": tenant, "spec": {"name": "hub", "match": {"path_prefix": "/hub"}, "mode": "hub", "verify": verify},
                     "ingest": {"dedup": dedup, "transform": {"event_type": ".type"}, "routes": [{"name": "all", "to": [endpoint]}]}})),
        201,
    );
    let store_spec = json!({"name": "store", "match": {"path_prefix": "/store"}, "mode": "hub", "verify": verify});
    let store_source = cp.create(
        "/v1/sources",
        &json!({"tenant_id": tenant, "spec": store_spec,
                     "ingest": {"dedup": dedup, "transform": {"event_type": ".type"}}}),
    );
    cp.json(
        "POST",
        "/v1/sources",
        Some(&json!({"tenant_id": tenant, "spec": {"name": "edge", "match": {"path_prefix": "/edge"}, "verify": verify}})),
        201,
    );
    let envoy = Envoy::sidecar_with_ingest_workers(
        "bench-ingest",
        cp.xds_port,
        port,
        &cp.options.ingest,
        envoy_workers(),
    );
    // Until the configuration arrives Envoy answers 503.
    let start = Instant::now();
    loop {
        let warm = signed(1, "warm");
        let (h, b) = &warm[0];
        let ok = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/hub", envoy.port))
            .headers(
                h.iter()
                    .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
                    .collect(),
            )
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await;
        let last = match ok {
            Ok(r) if r.status() == 200 => break,
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hub source never became ready: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_counted(&count, 1, Instant::now()).await;
    // Warm-up of both paths, then the measured runs, baseline first.
    let target = (envoy.port, cp.pid(), envoy.pid());
    measure(target, "/edge/in", 2_000, "warm-edge", &count).await;
    measure(target, "/hub/in", 2_000, "warm-hub", &count).await;
    let paths = [
        (
            "edge (baseline): verified, passed to the receiver",
            "/edge/in",
            "edge",
        ),
        ("hub: verified, stored, routed, delivered", "/hub/in", "hub"),
        ("hub, no routes: verified, stored", "/store/in", "store"),
    ];
    let mut rounds_of: [Vec<Run>; 3] = Default::default();
    for round in 0..rounds() {
        for ((_, path, prefix), runs) in paths.iter().zip(&mut rounds_of) {
            runs.push(measure(target, path, n, &format!("{prefix}{round}"), &count).await);
        }
    }
    let mut per_round = Vec::new();
    let mut medians = Vec::new();
    for ((_, _, prefix), mut runs) in paths.iter().zip(rounds_of) {
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.accepted_per_sec))
            .collect();
        per_round.push(format!("{prefix}: {}", each.join(" ")));
        runs.sort_by(|a, b| a.accepted_per_sec.total_cmp(&b.accepted_per_sec));
        medians.push(runs.swap_remove(runs.len() / 2));
    }
    let per_round = per_round.join("; ");
    let [edge, hub, store]: [Run; 3] = medians.try_into().expect("one median per path");
    // What an operator does after fixing a missing route: the store-only source gets one, and
    // everything it stored is replayed through it by a bulk job.
    cp.json(
        "PUT",
        &format!("/v1/sources/{store_source}"),
        Some(&json!({"spec": store_spec, "ingest": {"dedup": dedup, "transform": {"event_type": ".type"}, "routes": [{"name": "all", "to": [endpoint]}]}})),
        200,
    );
    let replay = bulk_replay(&cp, &store_source, (cp.pid(), envoy.pid()), &count).await;
    // Routed arrivals while the same webhooks are replayed again: what a bulk job costs live
    // traffic. The job's deliveries share the receiver, so only the provider's figures count.
    let job = start_replay(&cp, &store_source);
    let during = measure(target, "/hub/in", n, "during", &count).await;
    let meanwhile = cp.json("GET", &job, None, 200);
    let still_running = meanwhile["status"] == "running";
    // From the job's record, which it updates after each page of 256.
    let job_pace =
        meanwhile["requeued"].as_f64().expect("a count") * during.accepted_per_sec / n as f64;
    cp.job_ended(&job).await;
    let resend = resend_during_arrivals(&cp, &endpoint, target, n, &count).await;
    let rss = peak_rss_mib(cp.pid());
    let stored = cp.json("GET", "/v1/inbound_events?limit=1", None, 200);
    assert!(stored["data"].as_array().is_some_and(|d| !d.is_empty()));
    let runs = [
        (paths[0].0, &edge),
        (paths[1].0, &hub),
        (paths[2].0, &store),
    ];
    let mut rows = String::new();
    for (name, r) in runs {
        let delivered = if std::ptr::eq(r, &store) {
            "–".to_owned()
        } else {
            format!("{:.0}", r.end_to_end_per_sec)
        };
        println!(
            "{name}: {:.0} accepted/s, p50 {:.1} ms, p99 {:.1} ms, delivered end to end {delivered}/s; CPU per webhook: control plane {:.0} µs, Envoy {:.0} µs, load generator and receiver {:.0} µs, machine {:.0} µs; control plane per webhook: {:.2} context switches, {:.1} KiB to storage",
            r.accepted_per_sec, r.p50_ms, r.p99_ms, r.cpu_us.control_plane, r.cpu_us.envoy, r.cpu_us.bench, r.cpu_us.machine, r.switches, r.storage_kib
        );
        rows.push_str(&format!(
            "| {name} | {:.0} | {:.1} ms | {:.1} ms | {delivered} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.2} | {:.1} KiB |\n",
            r.accepted_per_sec, r.p50_ms, r.p99_ms, r.cpu_us.control_plane, r.cpu_us.envoy, r.cpu_us.bench, r.cpu_us.machine, r.switches, r.storage_kib
        ));
    }
    println!(
        "per round, accepted/s: {per_round}\nhub / edge: {:.2}; control plane peak RSS {rss:.1} MiB",
        hub.accepted_per_sec / edge.accepted_per_sec
    );
    let replayed = format!(
        "**Bulk replay** (`POST /v1/inbound_events/replay` of the store-only source's {} webhooks, after giving it the hub's route; `concurrency` {}): {:.0} webhooks run again per second (the job's start to its end: parsed, transformed, routed, stored with their outbound events), {:.0}/s delivered end to end; control plane CPU {:.0} µs per webhook, {:.2} context switches, {:.1} KiB to storage.",
        replay.webhooks,
        std::env::var("BENCH_REPLAY_CONCURRENCY").unwrap_or_else(|_| "default (64)".into()),
        replay.rerun_per_sec, replay.delivered_per_sec, replay.cpu_us, replay.switches, replay.storage_kib
    );
    let replayed = format!(
        "{replayed} Routed arrivals while another such replay runs: {:.0} accepted/s, p50 {:.1} ms, p99 {:.1} ms{} (alone, the hub row: {:.0}/s, p99 {:.1} ms); meanwhile the job ran about {job_pace:.0} webhooks/s (its recorded progress, pages of 256).",
        during.accepted_per_sec,
        during.p50_ms,
        during.p99_ms,
        if still_running { "" } else { "; the replay ended before the arrivals did" },
        hub.accepted_per_sec,
        hub.p99_ms
    );
    let replayed = format!(
        "{replayed} Routed arrivals while a delivery replay (`POST /v1/deliveries/replay`, the endpoint's {} succeeded deliveries sent again) runs: {:.0} accepted/s, p50 {:.1} ms, p99 {:.1} ms; meanwhile about {:.0} deliveries/s were sent again (the receiver's count less the arrivals').",
        resend.requeued, resend.during.accepted_per_sec, resend.during.p50_ms, resend.during.p99_ms, resend.resent_per_sec
    );
    println!("{replayed}");
    let retained = match retention() {
        Some(r) => format!(" With `BENCH_RETENTION={r}`: the control plane's `--retention {r}` and one-second duplicate\n\
            windows, so the purge deletes webhooks, events, deliveries and attempts about as fast as they arrive."),
        None => String::new(),
    };
    let date = today();
    let section = format!(
        "<!-- bench-ingest:start -->\n## Inbound hub throughput (`make bench-ingest`)\n\n\
         {n} webhooks of about 300 bytes per path and round, each signed (Standard Webhooks) with its own id, posted\n\
         through Envoy 1.40 with the filter ({} worker threads, `BENCH_ENVOY_WORKERS`) by {} concurrent keep-alive\n\
         connections (`BENCH_CLIENTS`), each request serialized before the clock starts. **hub**: the filter verifies; the control plane (release, SQLite) checks the id for\n\
         duplicates, computes the event type (jq), stores the webhook and its routed outbound event durably (group\n\
         commit) before the 200, and delivers it to one endpoint on a counting receiver, all at once. **edge**, side by\n\
         side on the same Envoy: verified and passed straight to the receiver, nothing stored. **hub, no routes**: stored\n\
         only, to show the accept path apart from delivery. Latency is what the provider sees. CPU per webhook from\n\
         `/proc`: the control plane, Envoy, the benchmark's own process (load generator and receiver), and every process\n\
         on the machine, kernel work included. Counted rather than timed, so comparable across hours of a shared\n\
         machine: the control plane's context switches (all threads) and the bytes it sent to storage (`/proc/<pid>/io`\n\
         `write_bytes`: the WAL and checkpoints), per webhook. The three paths run in turn for {} rounds (`BENCH_ROUNDS`); each row is\n\
         the path's median round.{retained} Measured {date} on {} cores ({}), everything on the same machine.\n\n\
         | path | accepted/s | p50 | p99 | delivered end to end/s | CPU: control plane | CPU: Envoy | CPU: load generator and receiver | CPU: machine | control plane: context switches | control plane: to storage |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\
         Per round, accepted/s: {per_round}.\n\n\
         hub / edge: {:.2}. Control plane peak RSS: {rss:.1} MiB. Target: ≥ 10,000 accepted/s and p99 ≤ 20 ms.\n\n\
         {replayed}\n\
         <!-- bench-ingest:end -->",
        envoy_workers(),
        clients(),
        rounds(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        hub.accepted_per_sec / edge.accepted_per_sec,
    );
    write_benchmark_section("bench-ingest", &section);
}
