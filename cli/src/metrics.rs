//! `imv serve --metrics-address`: the daemon's metrics, in Prometheus' text format, over
//! HTTP (`GET /metrics`). prometheus-client keeps and encodes them; tiny_http serves them
//! from a thread of their own (the daemon has no async runtime to share).
//!
//! The call histogram's buckets are the ones the containerd kit's patch gives its own
//! (integration/containerd/patches/0001-...), so the two read side by side.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imv::backend::Progress;
use imv::service::CallObserver;
use imv::{Error, ImageVolumes, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Seconds, from a warm call (a tenth of a millisecond) to a cold one on a big image.
pub const CALL_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Seconds an image's unpack takes, from a small layer to a model of gigabytes.
const UNPACK_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// The daemon's metrics: told of every call (a [`CallObserver`]) and of every unpack (a
/// [`Progress`]).
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    volumes_mounted: Gauge,
    unpack_bytes: Counter,
    unpacks: Histogram,
    /// When each unpack in progress began, by task name.
    unpacking: Mutex<HashMap<String, Instant>>,
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "imv_calls",
            "Calls the daemon answered, by method and gRPC code",
            calls.clone(),
        );
        let durations = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            call_histogram,
        );
        registry.register(
            "imv_call_duration_seconds",
            "Time from a request's arrival to its answer, by method",
            durations.clone(),
        );
        let volumes_mounted = Gauge::default();
        registry.register(
            "imv_volumes_mounted",
            "Image volumes mounted under the state directory",
            volumes_mounted.clone(),
        );
        let unpack_bytes = Counter::default();
        registry.register(
            "imv_unpack_bytes",
            "Bytes of layer blobs unpacked",
            unpack_bytes.clone(),
        );
        let unpacks = Histogram::new(UNPACK_BUCKETS);
        registry.register(
            "imv_unpack_duration_seconds",
            "Time each unpack (an image's layers, or one layer) took",
            unpacks.clone(),
        );
        Metrics {
            registry,
            calls,
            durations,
            volumes_mounted,
            unpack_bytes,
            unpacks,
            unpacking: Mutex::default(),
        }
    }

    /// The metrics in Prometheus' text format, the mounted volumes counted now.
    pub fn encode(&self, volumes: &ImageVolumes) -> Result<String> {
        let mounted = volumes.volumes()?.iter().filter(|v| v.mounted).count();
        self.volumes_mounted
            .set(i64::try_from(mounted).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| Error::internal(format!("encoding the metrics: {e}")))?;
        Ok(text)
    }
}

/// Whether a progress task is an unpack (the backends name them so).
fn is_unpack(task: &str) -> bool {
    task.starts_with("unpack ") || task.starts_with("files ")
}

impl CallObserver for Metrics {
    fn call_done(&self, method: &str, code: &str, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

impl Progress for Metrics {
    fn begin(&self, task: &str, _total: Option<u64>) {
        if is_unpack(task) {
            lock(&self.unpacking).insert(task.to_owned(), Instant::now());
        }
    }

    fn advance(&self, task: &str, bytes: u64) {
        if is_unpack(task) {
            self.unpack_bytes.inc_by(bytes);
        }
    }

    fn end(&self, task: &str) {
        if let Some(began) = lock(&self.unpacking).remove(task) {
            self.unpacks.observe(began.elapsed().as_secs_f64());
        }
    }
}

/// The lock, whether or not a thread panicked holding it (the map stays usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The HTTP endpoint: `GET /metrics` (or `/`) answers the metrics; anything else is 404.
pub struct Endpoint {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Listen on `address` (an IP and port, e.g. `127.0.0.1:9464`) and serve until
    /// [`stop`](Self::stop).
    pub fn start(
        address: SocketAddr,
        metrics: Arc<Metrics>,
        volumes: Arc<ImageVolumes>,
    ) -> Result<Self> {
        let server = tiny_http::Server::http(address).map_err(|e| {
            Error::unavailable(format!("--metrics-address {address}: cannot listen: {e}"))
        })?;
        // The address bound (a port 0 asked for any free one).
        let bound = server
            .server_addr()
            .to_ip()
            .map_or_else(|| address.to_string(), |a| a.to_string());
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("imv-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = answer(request.method(), request.url(), &metrics, &volumes);
                    if let Err(e) = request.respond(response) {
                        tracing::debug!(error = %e, "metrics: answering a scrape");
                    }
                }
            })
            .map_err(|e| Error::internal(format!("starting the metrics thread: {e}")))?;
        tracing::info!(address = %bound, "serving metrics at /metrics");
        Ok(Endpoint {
            server,
            thread: Some(thread),
        })
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Answer = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn answer(
    method: &tiny_http::Method,
    url: &str,
    metrics: &Metrics,
    volumes: &ImageVolumes,
) -> Answer {
    let path = url.split('?').next().unwrap_or(url);
    if !matches!(method, tiny_http::Method::Get) || !matches!(path, "/metrics" | "/") {
        return tiny_http::Response::from_string("not found: GET /metrics\n").with_status_code(404);
    }
    match metrics.encode(volumes) {
        Ok(text) => tiny_http::Response::from_string(text).with_header(
            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
                .parse::<tiny_http::Header>()
                .expect("a valid header"),
        ),
        Err(e) => tiny_http::Response::from_string(format!("{e}\n")).with_status_code(500),
    }
}
