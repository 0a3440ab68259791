//! The `budget` extension: spending limits per tenant (and workflow) whose spent is read from
//! the chargeback ledger only — no reservations, no counters of its own — served over an
//! HTTP API for proxies to ask before a model call, with threshold alerts that fire once.
//!
//! - [`defs`]: the budgets file (hot-reloaded);
//! - [`engine`]: spent per budget from the ledger, incrementally, equal to a full recount;
//! - [`alerts`]: crossings recorded in the ledger, then logged, counted and POSTed;
//! - [`api`]: `GET /v1/budgets[/{tenant}]`, bearer tokens as the receivers'.

pub mod alerts;
pub mod api;
pub mod defs;
pub mod engine;
pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::auth::{AuthConfig, ClientPolicy};
use crate::component::factory::{Component, ExtensionBuilder, Started};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::reload::{ReloadTrigger, Wake};
use crate::component::BoxFuture;
use crate::config::node::check_endpoint;
use crate::config::{ComponentId, Diagnostics, Map};
use crate::cost::pricing::decimal_to_f64;
use crate::ledger::store::Target;
use crate::ledger::target::TargetConfig;
use crate::ledger::Store;

use alerts::{Alerter, Webhook, WebhookConfig};
use defs::Budgets;
use engine::{BudgetFigures, Engine};
use state::{Shared, Snapshot};

/// A configured `budget` extension (its files loaded; it listens at start).
pub struct BudgetConfig {
    id: ComponentId,
    endpoint: String,
    budgets_path: PathBuf,
    budgets: Budgets,
    target: Target,
    policy: Arc<ClientPolicy>,
    refresh_interval: Duration,
    reload_interval: Option<Duration>,
    settle: Duration,
    recount_interval: Duration,
    max_series: usize,
    instance: String,
    webhook: Option<WebhookConfig>,
}

/// The `budget` extension's options (README "Extensions"), as read: the budgets file, the
/// ledger's password and TLS files, the token file and the webhook's TLS files are named, not
/// read.
#[derive(Debug, Clone)]
pub struct Config {
    /// `endpoint` (default `127.0.0.1:8089`): where the API listens.
    pub endpoint: String,
    /// `auth` (required): the API's bearer tokens.
    pub auth: AuthConfig,
    /// `ledger` (required): the ledger's connection options; `None` when missing (reported).
    pub ledger: Option<TargetConfig>,
    /// `budgets` (required): the budgets file.
    pub budgets: Option<String>,
    /// `refresh_interval` (default `1s`).
    pub refresh_interval: Duration,
    /// `reload` (default `true`): re-read the budgets file when it changes.
    pub reload: bool,
    /// `reload_interval` (default `5s`).
    pub reload_interval: Duration,
    /// `settle` (default `30s`).
    pub settle: Duration,
    /// `recount_interval` (default `10m`).
    pub recount_interval: Duration,
    /// `max_series` (default `1000`).
    pub max_series: usize,
    /// `instance_id` (default: `HOSTNAME` or the kernel host name, looked up at build).
    pub instance_id: Option<String>,
    /// `webhook` without its `tls` (none when absent, or when its `url` has problems) ...
    pub webhook: Option<WebhookConfig>,
    /// ... and `webhook.tls`, whenever the section has a `webhook` (files not loaded).
    pub webhook_tls: Option<crate::tls::ClientTlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: "127.0.0.1:8089".to_string(),
            auth: AuthConfig::default(),
            ledger: None,
            budgets: None,
            refresh_interval: Duration::from_secs(1),
            reload: true,
            reload_interval: Duration::from_secs(5),
            settle: Duration::from_secs(30),
            recount_interval: Duration::from_secs(600),
            max_series: 1000,
            instance_id: None,
            webhook: None,
            webhook_tls: None,
        }
    }
}

impl Component for BudgetConfig {
    type Config = Config;
    type Built = Box<dyn ExtensionBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        if let Some(e) = m.str("endpoint", d) {
            cfg.endpoint = e;
        }
        check_endpoint(m, &cfg.endpoint, d);
        cfg.auth = crate::auth::read_bearer(m, d);
        cfg.ledger = match m.map("ledger", d) {
            Some(l) => {
                let t = crate::ledger::target::read_target(&l, d);
                l.finish(d);
                Some(t)
            }
            None => {
                d.error(
                    m.key_path("ledger"),
                    "missing: { url: sqlite:PATH | postgres://… } (the ledger the exporter writes)",
                );
                None
            }
        };
        cfg.budgets = m.str("budgets", d);
        if cfg.budgets.is_none() && !m.has("budgets") {
            d.error(m.key_path("budgets"), "missing: the budgets file (YAML)");
        }
        if let Some(t) = m.duration("refresh_interval", d) {
            cfg.refresh_interval = t;
        }
        if cfg.refresh_interval.is_zero() {
            d.error(m.key_path("refresh_interval"), "must be more than 0");
        }
        if let Some(r) = m.bool("reload", d) {
            cfg.reload = r;
        }
        if let Some(t) = m.duration("reload_interval", d) {
            cfg.reload_interval = t;
        }
        if cfg.reload && cfg.reload_interval.is_zero() {
            d.error(m.key_path("reload_interval"), "must be more than 0");
        }
        if let Some(t) = m.duration("settle", d) {
            cfg.settle = t;
        }
        if let Some(t) = m.duration("recount_interval", d) {
            cfg.recount_interval = t;
        }
        if cfg.recount_interval.is_zero() {
            d.error(m.key_path("recount_interval"), "must be more than 0");
        }
        if let Some(n) = m.u64_in("max_series", 1, 1_000_000, d) {
            cfg.max_series = n as usize;
        }
        cfg.instance_id = m.str("instance_id", d);
        if let Some(w) = m.map("webhook", d) {
            let (webhook, tls) = read_webhook(&w, d);
            cfg.webhook = webhook;
            cfg.webhook_tls = Some(tls);
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        m: &Map<'_>,
        ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        let policy = cfg.auth.build(id.as_str(), ctx, d);
        let target = cfg.ledger.as_ref().and_then(|t| t.load(d));
        let webhook_tls = cfg.webhook_tls.as_ref().map(|t| t.load(d));
        let webhook = cfg.webhook.map(|w| WebhookConfig {
            tls: webhook_tls.unwrap_or_default(),
            ..w
        });
        let budgets_path = PathBuf::from(cfg.budgets.clone().unwrap_or_default());
        let budgets = match &cfg.budgets {
            None => None,
            Some(f) => match Budgets::load(&budgets_path) {
                Ok(b) => Some(b),
                Err(problems) => {
                    for p in problems {
                        d.error(m.key_path("budgets"), format!("{f}: {p}"));
                    }
                    None
                }
            },
        };
        Some(Box::new(BudgetConfig {
            id: id.clone(),
            endpoint: cfg.endpoint,
            budgets_path,
            budgets: budgets?,
            target: target?,
            policy,
            refresh_interval: cfg.refresh_interval,
            reload_interval: cfg.reload.then_some(cfg.reload_interval),
            settle: cfg.settle,
            recount_interval: cfg.recount_interval,
            max_series: cfg.max_series,
            instance: cfg
                .instance_id
                .unwrap_or_else(crate::ledger::target::default_instance),
            webhook,
        }))
    }
}

/// Reads `webhook`: its options (`None` when `url` has problems, reported) with `tls` left at
/// its default, and `tls` as read (files not loaded).
fn read_webhook(
    w: &Map<'_>,
    d: &mut Diagnostics,
) -> (Option<WebhookConfig>, crate::tls::ClientTlsConfig) {
    let url = match w.str("url", d) {
        None => {
            d.error(
                w.key_path("url"),
                "missing: the http:// or https:// URL alerts are POSTed to",
            );
            None
        }
        Some(u) => match u.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http") | Some("https"))
                    && uri.host().is_some() =>
            {
                Some(uri)
            }
            _ => {
                d.error(
                    w.key_path("url"),
                    format!("expected an http:// or https:// URL, found {u:?}"),
                );
                None
            }
        },
    };
    let tls = crate::tls::read_client(w, d);
    let timeout = w.duration("timeout", d).unwrap_or(Duration::from_secs(5));
    let max_attempts = w.u64_in("max_attempts", 1, 1000, d).unwrap_or(8) as u32;
    let initial_backoff = w
        .duration("initial_backoff", d)
        .unwrap_or(Duration::from_millis(500));
    let max_backoff = w
        .duration("max_backoff", d)
        .unwrap_or(Duration::from_secs(30));
    if timeout.is_zero() {
        d.error(w.key_path("timeout"), "must be more than 0");
    }
    if max_backoff < initial_backoff {
        d.error(
            w.key_path("max_backoff"),
            "must not be less than initial_backoff",
        );
    }
    w.finish(d);
    let webhook = url.map(|url| WebhookConfig {
        url,
        tls: crate::tls::ClientTls::default(),
        timeout,
        max_attempts,
        initial_backoff,
        max_backoff,
    });
    (webhook, tls)
}

fn now_ns() -> i64 {
    crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
    tenant: String,
    workflow: String,
    currency: String,
}

/// `tollgate_budget_spent`, `_limit`, `_utilization` per budget of the current snapshot (at
/// most `max_series`; the number left out is `tollgate_budget_series_overflow`), and the
/// snapshot's age.
struct Gauges(Arc<Shared>);

/// A per-budget gauge: name, help, value.
type GaugeFamily = (&'static str, &'static str, fn(&BudgetFigures) -> f64);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BudgetGauges")
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(snap) = self.0.snapshot() else {
            return Ok(());
        };
        let shown = &snap.statuses[..snap.statuses.len().min(self.0.max_series)];
        let labels = |s: &BudgetFigures| BudgetLabels {
            budget: s.budget.clone(),
            tenant: s.tenant.clone(),
            workflow: s.workflow.clone().unwrap_or_default(),
            currency: s.currency.clone(),
        };
        let families: [GaugeFamily; 3] = [
            (
                "tollgate_budget_spent",
                "Spent in the budget's current period, from the ledger",
                |s| decimal_to_f64(s.spent),
            ),
            ("tollgate_budget_limit", "The budget's limit", |s| {
                decimal_to_f64(s.limit)
            }),
            (
                "tollgate_budget_utilization",
                "spent / limit (1 = the limit is reached)",
                |s| s.ratio().map_or(f64::MAX, decimal_to_f64),
            ),
        ];
        for (name, help, value) in families {
            let mut me = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in shown {
                ConstGauge::new(value(s)).encode(me.encode_family(&labels(s))?)?;
            }
        }
        let me = encoder.encode_descriptor(
            "tollgate_budget_series_overflow",
            "Budgets left out of the per-budget gauges because max_series was reached",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new((snap.statuses.len() - shown.len()) as i64).encode(me)?;
        let me = encoder.encode_descriptor(
            "tollgate_budget_snapshot_age_seconds",
            "Age of the snapshot budget answers are served from",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(snap.taken.elapsed().as_secs_f64()).encode(me)?;
        Ok(())
    }
}

impl ExtensionBuilder for BudgetConfig {
    fn start(self: Box<Self>, ctx: &StartCtx) -> BoxFuture<'static, Result<Started, String>> {
        let ctx = ctx.clone();
        Box::pin(async move {
            let id = self.id.to_string();
            let store = Store::open(&self.target)
                .await
                .map_err(|e| format!("extensions.{id}.ledger: {e}"))?;
            let webhook = match self.webhook.clone() {
                None => None,
                Some(w) => {
                    Some(Webhook::new(w).map_err(|e| format!("extensions.{id}.webhook: {e}"))?)
                }
            };
            let m = &ctx.metrics;
            let alerts_family = m.register(
                "tollgate_budget_alerts",
                "Budget thresholds crossed (each budget, period and threshold once, fleet-wide)",
                Family::<alerts::AlertLabels, Counter>::default(),
            );
            let webhook_failures = m.register(
                "tollgate_budget_webhook_failures",
                "Budget alerts whose webhook gave up after every retry",
                Counter::default(),
            );
            let refresh_failures: Counter = m.register(
                "tollgate_budget_refresh_failures",
                "Budget snapshot refreshes that failed (the previous snapshot is served)",
                Counter::default(),
            );
            let reloads: Counter = m.register(
                "tollgate_budget_reloads",
                "Budgets file reloads applied",
                Counter::default(),
            );
            let reload_failures: Counter = m.register(
                "tollgate_budget_reload_failures",
                "Budgets file reloads rejected (the previous budgets stay in use)",
                Counter::default(),
            );
            let corrections: Counter = m.register(
                "tollgate_budget_recount_corrections",
                "Budgets whose incremental spent a full recount corrected",
                Counter::default(),
            );
            let shared = Arc::new(Shared {
                id: id.clone(),
                snapshot: RwLock::new(None),
                budgets: RwLock::new(Arc::new(self.budgets.clone())),
                policy: self.policy.clone(),
                max_series: self.max_series,
            });
            m.register_collector(Box::new(Gauges(shared.clone())));
            let alerter = Arc::new(Alerter::new(
                id.clone(),
                self.instance.clone(),
                store.clone(),
                webhook,
                alerts_family,
                webhook_failures,
                self.max_series,
            ));
            let mut refresher = Refresher {
                shared: shared.clone(),
                engine: Engine::new(store, self.settle),
                alerter: alerter.clone(),
                refresh_failures,
                corrections,
                last_recount: Instant::now(),
                recount_interval: self.recount_interval,
            };
            // The first snapshot before the API answers (a failure is retried by the task).
            alerter.preload().await;
            refresher.refresh(false).await;
            alerter.resume().await;

            let listener = tokio::net::TcpListener::bind(&self.endpoint)
                .await
                .map_err(|e| {
                    format!(
                        "extensions.{id}.endpoint: cannot listen on {}: {e}",
                        self.endpoint
                    )
                })?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let app = api::router(shared.clone());
            let shutdown = ctx.shutdown.clone();
            let sid = id.clone();
            let serving = shutdown.clone();
            let server = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(serving.cancelled_owned())
                    .await
                {
                    tracing::error!(extension = %sid, error = %e, "budget API server failed");
                }
            });

            let mut trigger =
                ReloadTrigger::new(self.reload_interval.is_some(), ctx.shutdown.clone());
            let path = self.budgets_path.clone();
            let reload_interval = self.reload_interval;
            let refresh_interval = self.refresh_interval;
            let refreshing = tokio::spawn(async move {
                let mut stamp = file_stamp(&path);
                let mut last_check = Instant::now();
                while let Some(wake) = trigger.wait(refresh_interval).await {
                    let due = reload_interval.is_some_and(|r| last_check.elapsed() >= r);
                    if wake == Wake::Hangup || due {
                        last_check = Instant::now();
                        let now = file_stamp(&path);
                        if wake == Wake::Hangup || now != stamp {
                            stamp = now;
                            match Budgets::load(&path) {
                                Ok(b) => {
                                    tracing::info!(extension = %refresher.shared.id, budgets = b.listed.len(), default = b.default.is_some(), "budgets reloaded");
                                    reloads.inc();
                                    let mut g = match refresher.shared.budgets.write() {
                                        Ok(g) => g,
                                        Err(p) => p.into_inner(),
                                    };
                                    *g = Arc::new(b);
                                }
                                Err(problems) => {
                                    reload_failures.inc();
                                    for p in problems {
                                        tracing::error!(extension = %refresher.shared.id, file = %path.display(), path = %p.path, error = %p.message, "budgets reload rejected; keeping the previous budgets");
                                    }
                                }
                            }
                        }
                    }
                    let recount = refresher.last_recount.elapsed() >= refresher.recount_interval;
                    refresher.refresh(recount).await;
                }
            });
            tracing::info!(extension = %id, endpoint = %addr, "budget API listening");
            Ok(Started::tasks(
                vec![("http", addr)],
                shutdown,
                vec![server, refreshing],
            ))
        })
    }
}

fn file_stamp(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

struct Refresher {
    shared: Arc<Shared>,
    engine: Engine,
    alerter: Arc<Alerter>,
    refresh_failures: Counter,
    corrections: Counter,
    last_recount: Instant,
    recount_interval: Duration,
}

impl Refresher {
    /// Reads the ledger, publishes a new snapshot, then evaluates the thresholds.
    async fn refresh(&mut self, recount: bool) {
        let budgets = self.shared.budgets();
        let now = now_ns();
        let min_hour = engine::min_hour(&budgets, now);
        let read = match self.engine.refresh(min_hour, recount).await {
            Ok(r) => r,
            Err(e) => {
                self.refresh_failures.inc();
                tracing::warn!(extension = %self.shared.id, error = %e, "budget refresh failed; serving the previous snapshot");
                return;
            }
        };
        if recount {
            self.last_recount = Instant::now();
            for (tenant, currency) in &read.corrected {
                self.corrections.inc();
                tracing::warn!(extension = %self.shared.id, tenant = %tenant, currency = %currency, "a full recount corrected the incremental spend (an event was written with an ingest time older than `settle`)");
            }
        }
        let statuses = engine::statuses(&budgets, &read.totals, now);
        let snap = Arc::new(Snapshot {
            taken_ns: now,
            taken: Instant::now(),
            high_water: read.high_water,
            budgets,
            totals: read.totals,
            statuses,
        });
        {
            let mut g = match self.shared.snapshot.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *g = Some(snap.clone());
        }
        self.alerter.evaluate(&snap.statuses, now).await;
    }
}
