//! The `loadbalancing` exporter: the Collector's exporter of that name, with failover.
//!
//! Each request is split by `routing_key` ([`split`]) over a consistent-hash ring of
//! backends ([`ring`]) and each part is handed to its backend's own delivery layer (an
//! `otlp` exporter built from `protocol.otlp`, behind its own sending queue and retries). The
//! client is answered once every part is queued.
//!
//! Backends come from a resolver: a `static` list or a `dns` name looked up every
//! `interval`. A backend whose sends keep failing (retryable failures, no success in
//! between) for `failover_after` leaves the ring: its keys go to the next members of the
//! ring and its queued and retrying requests are split again over the remaining members
//! instead of waiting for it. While out, it is probed (a TCP connect) and rejoins the ring,
//! taking its keys back, once it accepts connections. Affinity is best-effort around such a
//! move: a trace can be split between the old and the new owner.

pub mod ring;
pub mod split;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::component::factory::{Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::telemetry::SelfMetrics;
use crate::component::{BoxFuture, ExportError, Exporter, Payload, Signal};
use crate::config::{ComponentId, Diagnostics, Map};
use crate::exporters::otlp::{OtlpExporter, OtlpOptions, OtlpOptionsConfig};
use crate::exporters::queue::{self, Delivery, QueueConfig};
use crate::exporters::retry::{self, RetryConfig};

use ring::Ring;
use split::RoutingKey;

/// The port a backend without one is reached on (OTLP/gRPC).
pub const DEFAULT_PORT: u16 = 4317;
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum Resolver {
    /// `host:port` of every backend.
    Static(Vec<String>),
    Dns {
        hostname: String,
        port: u16,
        interval: Duration,
        timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct LoadBalancingConfig {
    pub id: ComponentId,
    pub routing_key: Option<RoutingKey>,
    pub otlp: OtlpOptions,
    /// Each backend's own `sending_queue` and `retry_on_failure` (from `protocol.otlp`).
    pub backend_queue: QueueConfig,
    pub backend_retry: RetryConfig,
    pub resolver: Resolver,
    pub failover_after: Duration,
}

/// `host` or `host:port` → `host:port`; the error says what is wrong with it.
fn host_port(s: &str) -> Result<String, String> {
    if s.contains("://") {
        return Err(format!(
            "{s:?}: a host:port without a scheme (plaintext or TLS is set by protocol.otlp.tls)"
        ));
    }
    let a: http::uri::Authority = s
        .parse()
        .map_err(|e| format!("{s:?} is not a host:port: {e}"))?;
    if a.as_str().contains('@') || a.host().is_empty() {
        return Err(format!("{s:?} is not a host:port"));
    }
    Ok(match a.port_u16() {
        Some(_) => a.as_str().to_string(),
        None => format!("{}:{DEFAULT_PORT}", a.host()),
    })
}

fn parse_resolver(m: &Map<'_>, d: &mut Diagnostics) -> Option<Resolver> {
    let Some(r) = m.map("resolver", d) else {
        d.error(
            m.key_path("resolver"),
            "missing: `static: { hostnames: [...] }` or `dns: { hostname: ... }`",
        );
        return None;
    };
    let stat = r.map("static", d);
    let dns = r.map("dns", d);
    let out = match (stat, dns) {
        (Some(s), Some(n)) => {
            s.skip();
            n.skip();
            d.error(
                r.path(),
                "set exactly one resolver: `static` or `dns`, not both",
            );
            None
        }
        (None, None) => {
            d.error(
                r.path(),
                "missing: `static: { hostnames: [...] }` or `dns: { hostname: ... }`",
            );
            None
        }
        (Some(s), None) => {
            let mut hosts = Vec::new();
            match s.str_list("hostnames", d) {
                None => d.error(
                    s.key_path("hostnames"),
                    "missing: the backends' host:port list",
                ),
                Some(list) if list.is_empty() => d.error(
                    s.key_path("hostnames"),
                    "empty: list at least one backend host:port",
                ),
                Some(list) => {
                    for (i, h) in list.iter().enumerate() {
                        let path = format!("{}[{i}]", s.key_path("hostnames"));
                        match host_port(h) {
                            Ok(hp) if hosts.contains(&hp) => {
                                d.error(path, format!("{hp} is listed twice"))
                            }
                            Ok(hp) => hosts.push(hp),
                            Err(e) => d.error(path, e),
                        }
                    }
                }
            }
            s.finish(d);
            Some(Resolver::Static(hosts))
        }
        (None, Some(n)) => {
            let hostname = n.str("hostname", d).unwrap_or_default();
            if hostname.is_empty() {
                d.error(
                    n.key_path("hostname"),
                    "missing: the name whose addresses are the backends",
                );
            } else if hostname.contains(':') || hostname.contains('/') {
                d.error(
                    n.key_path("hostname"),
                    format!("{hostname:?}: a bare host name (the port goes in `port`)"),
                );
            }
            let port = n
                .u64_in("port", 1, u64::from(u16::MAX), d)
                .map_or(DEFAULT_PORT, |p| p as u16);
            let interval = n.duration("interval", d).unwrap_or(Duration::from_secs(5));
            let timeout = n.duration("timeout", d).unwrap_or(Duration::from_secs(1));
            for (k, v) in [("interval", interval), ("timeout", timeout)] {
                if v.is_zero() {
                    d.error(n.key_path(k), "must be greater than 0");
                }
            }
            n.finish(d);
            Some(Resolver::Dns {
                hostname,
                port,
                interval,
                timeout,
            })
        }
    };
    r.finish(d);
    out
}

/// Reads `protocol.otlp`: the `otlp` exporter's options (no `endpoint`) and each backend's
/// delivery options (no I/O: the TLS files are named). Absent, the `otlp` defaults apply.
fn parse_protocol(
    m: &Map<'_>,
    d: &mut Diagnostics,
) -> (OtlpOptionsConfig, QueueConfig, RetryConfig) {
    let empty = Map::empty(m.key_path("protocol"));
    let protocol = m.map("protocol", d);
    let protocol_map = protocol.as_ref().unwrap_or(&empty);
    let empty_otlp = Map::empty(protocol_map.key_path("otlp"));
    let otlp_map = protocol_map.map("otlp", d);
    let o = otlp_map.as_ref().unwrap_or(&empty_otlp);
    if o.has("endpoint") {
        d.error(
            o.key_path("endpoint"),
            "the backends come from `resolver`: remove protocol.otlp.endpoint",
        );
    }
    let mut otlp = OtlpOptionsConfig::default();
    otlp.read(o, d);
    let backend_queue = queue::parse(o, d);
    if backend_queue.storage.is_some() {
        d.error(
            format!("{}.storage", o.key_path("sending_queue")),
            "the per-backend queues are in memory (their data moves between backends at failover); put a persistent queue on the gateways",
        );
    }
    let backend_retry = retry::parse(o, d);
    if let Some(o) = &otlp_map {
        o.finish(d);
    }
    if let Some(p) = &protocol {
        p.finish(d);
    }
    (otlp, backend_queue, backend_retry)
}

/// The `loadbalancing` exporter's options (README "Exporters"). Its own `sending_queue`
/// and `retry_on_failure` are the delivery options every exporter has, off unless configured.
#[derive(Debug, Clone)]
pub struct Config {
    /// `routing_key` (default: `traceID` for traces and logs, `service` for metrics).
    pub routing_key: Option<RoutingKey>,
    /// `failover_after` (default `5s`).
    pub failover_after: Duration,
    /// `protocol.otlp`: the `otlp` exporter's options (TLS files named, not loaded) ...
    pub otlp: OtlpOptionsConfig,
    /// ... each backend's own `sending_queue` ...
    pub backend_queue: QueueConfig,
    /// ... and `retry_on_failure`.
    pub backend_retry: RetryConfig,
    /// `resolver` (required): `static` or `dns`; no backends when it has problems
    /// (reported).
    pub resolver: Resolver,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            routing_key: None,
            failover_after: DEFAULT_FAILOVER_AFTER,
            otlp: OtlpOptionsConfig::default(),
            backend_queue: QueueConfig::default(),
            backend_retry: RetryConfig::default(),
            resolver: Resolver::Static(Vec::new()),
        }
    }
}

impl Component for LoadBalancingConfig {
    type Config = Config;
    type Built = Box<dyn ExporterBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        cfg.routing_key = m
            .str("routing_key", d)
            .and_then(|k| match RoutingKey::parse(&k) {
                Ok(k) => Some(k),
                Err(e) => {
                    d.error(m.key_path("routing_key"), e);
                    None
                }
            });
        if let Some(f) = m.duration("failover_after", d) {
            cfg.failover_after = f;
        }
        if cfg.failover_after.is_zero() {
            d.error(m.key_path("failover_after"), "must be greater than 0");
        }
        (cfg.otlp, cfg.backend_queue, cfg.backend_retry) = parse_protocol(m, d);
        // A resolver problem is already reported; the builder is kept so the exporter still
        // counts as defined (the configuration is refused anyway).
        if let Some(r) = parse_resolver(m, d) {
            cfg.resolver = r;
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        Some(Box::new(LoadBalancingConfig {
            id: id.clone(),
            routing_key: cfg.routing_key,
            otlp: cfg.otlp.load(d),
            backend_queue: cfg.backend_queue,
            backend_retry: cfg.backend_retry,
            resolver: cfg.resolver,
            failover_after: cfg.failover_after,
        }))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub exporter: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RingChangeLabels {
    pub exporter: String,
    pub backend: String,
    /// `added`, `removed` (resolver), `failed_over`, `restored`.
    pub change: String,
}

/// The exporter's own series (shared by every `loadbalancing` exporter of a service).
#[derive(Clone)]
struct LbMetrics {
    sent: [Family<BackendLabels, Counter>; 3],
    rerouted: [Family<BackendLabels, Counter>; 3],
    send_failures: Family<BackendLabels, Counter>,
    queue_size: Family<BackendLabels, Gauge>,
    in_ring: Family<BackendLabels, Gauge>,
    ring_changes: Family<RingChangeLabels, Counter>,
}

impl LbMetrics {
    fn new(m: &SelfMetrics) -> LbMetrics {
        let per_signal = |prefix: &str, help: &str| -> [Family<BackendLabels, Counter>; 3] {
            Signal::ALL.map(|s| {
                m.register_shared(
                    &format!("{prefix}_{}", s.item_name()),
                    &format!("{help} ({})", s.item_name().replace('_', " ")),
                    Family::<BackendLabels, Counter>::default,
                )
            })
        };
        LbMetrics {
            sent: per_signal(
                "tollgate_loadbalancer_backend_sent",
                "Items a loadbalancing backend accepted",
            ),
            rerouted: per_signal(
                "tollgate_loadbalancer_rerouted",
                "Items moved off a backend that left the ring (failover or resolver) to the remaining members",
            ),
            send_failures: m.register_shared(
                "tollgate_loadbalancer_backend_send_failures",
                "Failed send attempts to a loadbalancing backend",
                Family::<BackendLabels, Counter>::default,
            ),
            queue_size: m.register_shared(
                "tollgate_loadbalancer_backend_queue_size",
                "A loadbalancing backend's sending queue size (per protocol.otlp.sending_queue.sizer)",
                Family::<BackendLabels, Gauge>::default,
            ),
            in_ring: m.register_shared(
                "tollgate_loadbalancer_backend_in_ring",
                "1 while the backend is a member of the ring, 0 while failed over or removed",
                Family::<BackendLabels, Gauge>::default,
            ),
            ring_changes: m.register_shared(
                "tollgate_loadbalancer_ring_changes",
                "Ring membership changes by backend and kind (added, removed, failed_over, restored)",
                Family::<RingChangeLabels, Counter>::default,
            ),
        }
    }
}

/// How a backend's sends are going.
#[derive(Default)]
struct Health {
    /// The first failure since the last success.
    failing_since: Mutex<Option<Instant>>,
    /// Out of the ring after `failover_after` of failures (or removed by the resolver).
    out: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
}

impl Health {
    fn is_out(&self) -> bool {
        self.out.load(Ordering::Acquire)
    }
    fn succeeded(&self) {
        if let Ok(mut f) = self.failing_since.lock() {
            *f = None;
        }
    }
    fn failed(&self) {
        if let Ok(mut f) = self.failing_since.lock() {
            f.get_or_insert_with(Instant::now);
        }
    }
    fn failing_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .ok()
            .and_then(|f| f.map(|t| t.elapsed()))
    }
}

struct Backend {
    endpoint: String,
    delivery: Arc<Delivery>,
    health: Arc<Health>,
}

/// The ring and the backend behind each member index.
#[derive(Default)]
struct Routing {
    ring: Ring,
    backends: Vec<Arc<Backend>>,
}

struct Shared {
    id: String,
    routing_key: Option<RoutingKey>,
    otlp: OtlpOptions,
    backend_queue: QueueConfig,
    backend_retry: RetryConfig,
    failover_after: Duration,
    metrics: Arc<SelfMetrics>,
    lb: LbMetrics,
    /// Every resolved backend, by `host:port`.
    backends: Mutex<BTreeMap<String, Arc<Backend>>>,
    routing: RwLock<Arc<Routing>>,
    warned_fallback: [AtomicBool; 3],
    stopping: AtomicBool,
}

impl Shared {
    fn labels(&self, backend: &str) -> BackendLabels {
        BackendLabels {
            exporter: self.id.clone(),
            backend: backend.to_string(),
        }
    }

    fn ring_change(&self, backend: &str, change: &str) {
        self.lb
            .ring_changes
            .get_or_create(&RingChangeLabels {
                exporter: self.id.clone(),
                backend: backend.to_string(),
                change: change.to_string(),
            })
            .inc();
    }

    fn routing(&self) -> Arc<Routing> {
        self.routing.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Rebuilds the ring from the resolved backends that are not out.
    fn rebuild(&self, backends: &BTreeMap<String, Arc<Backend>>) {
        let ring = Ring::new(
            backends
                .values()
                .filter(|b| !b.health.is_out())
                .map(|b| b.endpoint.clone()),
        );
        // Index-aligned with the ring's members.
        let members: Vec<Arc<Backend>> = ring
            .members()
            .iter()
            .filter_map(|m| backends.get(m).cloned())
            .collect();
        for b in backends.values() {
            self.lb
                .in_ring
                .get_or_create(&self.labels(&b.endpoint))
                .set(i64::from(!b.health.is_out()));
        }
        if let Ok(mut r) = self.routing.write() {
            *r = Arc::new(Routing {
                ring,
                backends: members,
            });
        }
    }

    fn key_for(&self, signal: Signal) -> RoutingKey {
        match RoutingKey::for_signal(self.routing_key, signal) {
            Ok(k) => k,
            Err(fallback) => {
                if !self.warned_fallback[signal as usize].swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        exporter = %self.id,
                        signal = signal.as_str(),
                        routing_key = self.routing_key.map_or("", RoutingKey::as_str),
                        used = fallback.as_str(),
                        "routing_key does not apply to this signal; routing by the signal's default"
                    );
                }
                fallback
            }
        }
    }

    /// Splits `data` over the current ring and queues each part at its backend.
    async fn route(&self, data: &Payload) -> Result<(), ExportError> {
        let routing = self.routing();
        if routing.ring.is_empty() {
            let resolved = self.backends.lock().map(|b| b.len()).unwrap_or(0);
            return Err(ExportError {
                retryable: true,
                status: None,
                message: format!(
                    "exporter {}: no backend to send to ({resolved} resolved, none in the ring)",
                    self.id
                ),
                retry_after: Some(queue::FULL_RETRY_AFTER),
            });
        }
        let key = self.key_for(data.signal());
        let owner = |h: u64| routing.ring.owner_index(h).unwrap_or(0);
        let parts = split::split(data, key, &owner);
        let mut first_err = None;
        for (i, part) in parts {
            let Some(b) = routing.backends.get(i) else {
                // The ring and its backend list are built together; never drop data silently.
                first_err.get_or_insert(ExportError {
                    retryable: true,
                    status: None,
                    message: format!("exporter {}: ring member {i} has no backend", self.id),
                    retry_after: None,
                });
                continue;
            };
            if let Err(e) = b.delivery.submit(data.signal().as_str(), part).await {
                first_err.get_or_insert(ExportError {
                    message: format!("backend {}: {}", b.endpoint, e.message),
                    ..e
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Takes `b` out of the ring once it has been failing for `failover_after`; whether it
    /// is out.
    fn check_failover(&self, b: &Arc<Backend>) -> bool {
        if b.health.is_out() {
            return true;
        }
        let Some(failing) = b.health.failing_for() else {
            return false;
        };
        if failing < self.failover_after {
            return false;
        }
        let Ok(backends) = self.backends.lock() else {
            return false;
        };
        if b.health.out.swap(true, Ordering::AcqRel) {
            return true;
        }
        self.rebuild(&backends);
        let remaining = backends.values().filter(|x| !x.health.is_out()).count();
        drop(backends);
        let (queued, _) = b.delivery.pending();
        self.ring_change(&b.endpoint, "failed_over");
        tracing::warn!(
            exporter = %self.id,
            backend = %b.endpoint,
            failing_for = ?failing,
            queued,
            remaining,
            "backend unreachable past failover_after: its keys and queued data move to the next ring members"
        );
        true
    }

    fn restore(&self, b: &Arc<Backend>) {
        let Ok(backends) = self.backends.lock() else {
            return;
        };
        if !backends.contains_key(&b.endpoint) || !b.health.out.swap(false, Ordering::AcqRel) {
            return;
        }
        b.health.succeeded();
        self.rebuild(&backends);
        let all: Vec<Arc<Backend>> = backends.values().cloned().collect();
        drop(backends);
        self.ring_change(&b.endpoint, "restored");
        tracing::info!(exporter = %self.id, backend = %b.endpoint, "backend reachable again: it takes its keys back");
        // Requests held while no member was left may go now.
        for x in all {
            x.delivery.retry_now();
        }
    }

    /// A request of backend `from`, which is out of the ring, split over the members left.
    async fn reroute(&self, from: &str, data: &Payload) -> Result<(), ExportError> {
        self.route(data).await?;
        self.lb.rerouted[data.signal() as usize]
            .get_or_create(&self.labels(from))
            .inc_by(data.item_count());
        tracing::debug!(exporter = %self.id, backend = from, items = data.item_count(), "re-routed a request of a backend out of the ring");
        Ok(())
    }

    fn make_backend(self: &Arc<Self>, endpoint: &str) -> Result<Arc<Backend>, String> {
        let url = self
            .otlp
            .endpoint_url(endpoint)
            .map_err(|(key, e)| format!("exporters.{}: backend {endpoint}: {key}: {e}", self.id))?;
        let backend_id = ComponentId(format!("{}/{endpoint}", self.id));
        let inner = self
            .otlp
            .for_endpoint(&backend_id, url)
            .build(&self.metrics)?;
        let health = Arc::new(Health::default());
        let exporter = Arc::new(BackendExporter {
            inner,
            health: health.clone(),
            endpoint: endpoint.to_string(),
            shared: Arc::downgrade(self),
        });
        let delivery = Delivery::start(
            &backend_id,
            exporter,
            &self.backend_queue,
            self.backend_retry,
            self.metrics.clone(),
        )?;
        Ok(Arc::new(Backend {
            endpoint: endpoint.to_string(),
            delivery,
            health,
        }))
    }

    /// Makes the resolved set `endpoints`: new backends join the ring, gone ones leave it
    /// and their queued data is re-routed while their queue drains.
    fn apply(self: &Arc<Self>, endpoints: &BTreeSet<String>) {
        let mut added = Vec::new();
        for e in endpoints {
            let known = self
                .backends
                .lock()
                .map(|b| b.contains_key(e))
                .unwrap_or(true);
            if !known {
                match self.make_backend(e) {
                    Ok(b) => added.push(b),
                    Err(err) => {
                        tracing::error!(exporter = %self.id, backend = %e, error = %err, "cannot set up backend")
                    }
                }
            }
        }
        let Ok(mut backends) = self.backends.lock() else {
            return;
        };
        for b in &added {
            backends.insert(b.endpoint.clone(), b.clone());
        }
        let gone: Vec<Arc<Backend>> = backends
            .values()
            .filter(|b| !endpoints.contains(&b.endpoint))
            .cloned()
            .collect();
        for b in &gone {
            backends.remove(&b.endpoint);
            b.health.out.store(true, Ordering::Release);
        }
        if added.is_empty() && gone.is_empty() {
            return;
        }
        self.rebuild(&backends);
        let members = backends.len();
        drop(backends);
        for b in &added {
            self.ring_change(&b.endpoint, "added");
            tracing::info!(exporter = %self.id, backend = %b.endpoint, members, "backend added to the ring");
        }
        for b in gone {
            self.ring_change(&b.endpoint, "removed");
            self.lb
                .in_ring
                .get_or_create(&self.labels(&b.endpoint))
                .set(0);
            tracing::info!(exporter = %self.id, backend = %b.endpoint, members, "backend no longer resolved: removed from the ring, its queued data re-routed");
            // Draining goes through the exporter, which re-routes everything it is handed;
            // requests waiting to be retried are hurried along until the queue is empty.
            tokio::spawn(async move {
                let drain = b.delivery.shutdown();
                tokio::pin!(drain);
                loop {
                    b.delivery.retry_now();
                    tokio::select! {
                        _ = &mut drain => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            });
        }
    }

    fn all_backends(&self) -> Vec<Arc<Backend>> {
        self.backends
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One pass of the health loop: fail over backends failing for too long, hurry their
    /// queued data away, probe the ones out of the ring, export queue sizes.
    async fn tick(&self, probe_every: Duration) {
        for b in self.all_backends() {
            let (queued, _) = b.delivery.pending();
            self.lb
                .queue_size
                .get_or_create(&self.labels(&b.endpoint))
                .set(queued as i64);
            if !b.health.is_out() {
                if self.check_failover(&b) {
                    b.delivery.retry_now();
                }
                continue;
            }
            if queued > 0 {
                b.delivery.retry_now();
            }
            let due = b
                .health
                .last_probe
                .lock()
                .map(|mut last| {
                    let due = last.is_none_or(|t| t.elapsed() >= probe_every);
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                })
                .unwrap_or(false);
            if due && probe(&b.endpoint, self.otlp.timeout.min(Duration::from_secs(1))).await {
                self.restore(&b);
            }
        }
    }
}

/// Whether `host:port` accepts a TCP connection within `timeout`.
async fn probe(endpoint: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint)).await,
        Ok(Ok(_))
    )
}

/// One backend's `otlp` exporter, watching its health: what it is handed while its backend
/// is out of the ring goes to the other members instead.
struct BackendExporter {
    inner: OtlpExporter,
    health: Arc<Health>,
    endpoint: String,
    shared: Weak<Shared>,
}

impl Exporter for BackendExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let shared = self.shared.upgrade();
            if let Some(s) = &shared {
                if self.health.is_out() {
                    return s.reroute(&self.endpoint, data).await;
                }
            }
            let res = self.inner.export(data).await;
            let Some(s) = shared else {
                return res;
            };
            match res {
                Ok(()) => {
                    self.health.succeeded();
                    s.lb.sent[data.signal() as usize]
                        .get_or_create(&s.labels(&self.endpoint))
                        .inc_by(data.item_count());
                    Ok(())
                }
                Err(e) => {
                    s.lb.send_failures
                        .get_or_create(&s.labels(&self.endpoint))
                        .inc();
                    if !e.retryable {
                        return Err(e);
                    }
                    self.health.failed();
                    let me = s
                        .backends
                        .lock()
                        .ok()
                        .and_then(|b| b.get(&self.endpoint).cloned());
                    match me {
                        Some(b) if s.check_failover(&b) => s.reroute(&self.endpoint, data).await,
                        _ => Err(e),
                    }
                }
            }
        })
    }
}

struct LoadBalancingExporter {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl LoadBalancingConfig {
    /// The exporter's state, with no backend yet.
    fn shared(&self, metrics: &Arc<SelfMetrics>) -> Arc<Shared> {
        Arc::new(Shared {
            id: self.id.to_string(),
            routing_key: self.routing_key,
            otlp: self.otlp.clone(),
            backend_queue: self.backend_queue.clone(),
            backend_retry: self.backend_retry,
            failover_after: self.failover_after,
            lb: LbMetrics::new(metrics),
            metrics: metrics.clone(),
            backends: Mutex::new(BTreeMap::new()),
            routing: RwLock::new(Arc::new(Routing::default())),
            warned_fallback: Default::default(),
            stopping: AtomicBool::new(false),
        })
    }

    /// How often the health loop runs, and how often a backend out of the ring is probed.
    fn health_intervals(&self) -> (Duration, Duration) {
        let tick =
            (self.failover_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let probe_every =
            (self.failover_after / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        (tick, probe_every)
    }
}

/// The health loop (see [`Shared::tick`]) until the exporter stops.
fn spawn_health(
    s: Arc<Shared>,
    tick: Duration,
    probe_every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !s.stopping.load(Ordering::Acquire) {
            s.tick(probe_every).await;
            tokio::time::sleep(tick).await;
        }
    })
}

impl ExporterBuilder for LoadBalancingConfig {
    /// Its backends have their own queues and retries (`protocol.otlp`); in front of them
    /// both are off unless configured, so a client is answered once its data is in the
    /// backends' queues, and told to retry when it cannot be.
    fn delivery_on_by_default(&self) -> bool {
        false
    }

    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String> {
        let shared = self.shared(&ctx.metrics);
        let (tick, probe_every) = self.health_intervals();
        let mut tasks = Vec::new();
        match self.resolver {
            Resolver::Static(hosts) => {
                // Each backend is checked here so a bad one stops the start with its name.
                for h in &hosts {
                    shared.otlp.endpoint_url(h).map_err(|(key, e)| {
                        format!("exporters.{}: backend {h}: {key}: {e}", self.id)
                    })?;
                }
                shared.apply(&hosts.into_iter().collect());
            }
            Resolver::Dns {
                hostname,
                port,
                interval,
                timeout,
            } => {
                let s = shared.clone();
                tasks.push(tokio::spawn(async move {
                    resolve_loop(s, hostname, port, interval, timeout).await
                }));
            }
        }
        tasks.push(spawn_health(shared.clone(), tick, probe_every));
        Ok(Arc::new(LoadBalancingExporter {
            shared,
            tasks: Mutex::new(tasks),
        }))
    }
}

/// Looks `hostname` up every `interval` and applies the result; a failed lookup keeps the
/// backends of the last good one.
async fn resolve_loop(
    s: Arc<Shared>,
    hostname: String,
    port: u16,
    interval: Duration,
    timeout: Duration,
) {
    let mut last_error: Option<String> = None;
    while !s.stopping.load(Ordering::Acquire) {
        let res =
            tokio::time::timeout(timeout, tokio::net::lookup_host((hostname.as_str(), port))).await;
        match res {
            Ok(Ok(addrs)) => {
                let set: BTreeSet<String> = addrs.map(|a| a.to_string()).collect();
                if set.is_empty() {
                    tracing::warn!(exporter = %s.id, hostname, "DNS lookup returned no address; keeping the current backends");
                } else {
                    s.apply(&set);
                }
                last_error = None;
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(exporter = %s.id, hostname, error = %e, "DNS lookup failed; keeping the current backends");
                }
                last_error = Some(e);
            }
            Err(_) => {
                tracing::warn!(exporter = %s.id, hostname, ?timeout, "DNS lookup timed out; keeping the current backends");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

impl Exporter for LoadBalancingExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.shared.route(data))
    }

    /// Drains every backend's queue (a backend out of the ring keeps re-routing to the
    /// others while they drain), then stops the resolver and health loop.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let backends = self.shared.all_backends();
            let drains: Vec<_> = backends
                .into_iter()
                .map(|b| tokio::spawn(async move { b.delivery.shutdown().await }))
                .collect();
            for d in drains {
                let _ = d.await;
            }
            self.shared.stopping.store(true, Ordering::Release);
            let tasks = self
                .tasks
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            for t in tasks {
                t.abort();
            }
        })
    }
}

#[cfg(test)]
mod tests;
