//! Threshold alerts: each (budget, period, threshold) fires once, across restarts and
//! gateways. A crossing is first recorded in `ledger_budget_alerts` (unique key); only the
//! gateway whose insert succeeded logs, counts and POSTs it. The webhook is retried with
//! exponential backoff; the outcome is written back to the row, and a gateway that stopped
//! before finishing sends its own undelivered alerts again when it starts.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::ledger::budget::{self, Alert};
use crate::ledger::time::format_instant;
use crate::ledger::Store;
use crate::tls::connector::Connector;

use super::engine::BudgetFigures;

/// Where and how alerts are POSTed.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: Uri,
    pub tls: crate::tls::ClientTls,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub tenant: String,
    pub threshold: String,
}

/// The label a tenant gets in alert counts (bounded like the cost metrics: beyond
/// `max_series` distinct tenants, `__other__`).
pub struct TenantLabels {
    seen: Mutex<HashSet<String>>,
    max: usize,
}

impl TenantLabels {
    pub fn new(max: usize) -> Self {
        TenantLabels {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }
    pub fn label(&self, tenant: &str) -> String {
        let mut g = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.contains(tenant) {
            return tenant.to_string();
        }
        if g.len() < self.max {
            g.insert(tenant.to_string());
            return tenant.to_string();
        }
        "__other__".to_string()
    }
}

pub struct Alerter {
    pub id: String,
    pub instance: String,
    pub store: Store,
    pub webhook: Option<Webhook>,
    pub alerts: Family<AlertLabels, Counter>,
    pub webhook_failures: Counter,
    pub tenants: TenantLabels,
    /// Keys already recorded (by anyone), so each is inserted at most once per process.
    known: Mutex<BTreeSet<(String, i64, u32)>>,
}

/// The webhook client.
pub struct Webhook {
    cfg: WebhookConfig,
    client: Client<Connector, Full<Bytes>>,
}

impl Webhook {
    pub fn new(cfg: WebhookConfig) -> Result<Webhook, String> {
        let tls = if cfg.url.scheme_str() == Some("https") {
            let c = cfg.tls.rustls_config().map_err(|e| e.to_string())?;
            Some(tokio_rustls::TlsConnector::from(c))
        } else {
            None
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build::<_, Full<Bytes>>(Connector {
                tls,
                timeout: cfg.timeout,
            });
        Ok(Webhook { cfg, client })
    }

    async fn post_once(&self, body: &Bytes, key: &str) -> Result<(), String> {
        let req = http::Request::post(self.cfg.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .header(
                http::header::USER_AGENT,
                concat!("tollgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.cfg.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.cfg.timeout))?
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        // Drain the body so the connection can be reused.
        let _ = tokio::time::timeout(self.cfg.timeout, resp.into_body().collect()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// The JSON an alert is POSTed as.
pub fn payload(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "type": "tollgate.budget.threshold_crossed",
        "budget": a.budget,
        "tenant": a.tenant,
        "workflow": a.workflow,
        "threshold_percent": a.threshold,
        "period_start": format_instant(a.period_start_ns),
        "period_end": format_instant(a.period_end_ns),
        "currency": a.currency,
        "limit": a.limit,
        "spent": a.spent,
        "crossed_at": format_instant(a.crossed_ns),
        "gateway_instance": a.gateway_instance,
    })
}

fn alert_key(a: &Alert) -> String {
    format!("{}|{}|{}", a.budget, a.period_start_ns, a.threshold)
}

impl Alerter {
    pub fn new(
        id: String,
        instance: String,
        store: Store,
        webhook: Option<Webhook>,
        alerts: Family<AlertLabels, Counter>,
        webhook_failures: Counter,
        max_series: usize,
    ) -> Self {
        Alerter {
            id,
            instance,
            store,
            webhook,
            alerts,
            webhook_failures,
            tenants: TenantLabels::new(max_series),
            known: Mutex::new(BTreeSet::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, i64, u32)>> {
        match self.known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Records every newly crossed threshold; sends the ones this gateway recorded.
    pub async fn evaluate(self: &Arc<Self>, statuses: &[BudgetFigures], now_ns: i64) {
        let oldest = statuses
            .iter()
            .map(|s| s.start_ns)
            .min()
            .unwrap_or(i64::MIN);
        self.known().retain(|(_, start, _)| *start >= oldest);
        for s in statuses {
            for t in s.crossed() {
                let key = (s.budget.clone(), s.start_ns, t);
                if self.known().contains(&key) {
                    continue;
                }
                let a = Alert {
                    budget: s.budget.clone(),
                    tenant: s.tenant.clone(),
                    workflow: s.workflow.clone(),
                    threshold: t,
                    period_start_ns: s.start_ns,
                    period_end_ns: s.end_ns,
                    currency: s.currency.clone(),
                    limit: s.limit.normalize().to_string(),
                    spent: s.spent.normalize().to_string(),
                    crossed_ns: now_ns,
                    gateway_instance: self.instance.clone(),
                };
                match budget::record_alert(&self.store, &a).await {
                    Ok(mine) => {
                        self.known().insert(key);
                        if !mine {
                            tracing::debug!(extension = %self.id, budget = %a.budget, threshold = t, "budget threshold already recorded (earlier run or another gateway)");
                            continue;
                        }
                        tracing::warn!(extension = %self.id, budget = %a.budget, tenant = %a.tenant, threshold = t, spent = %a.spent, limit = %a.limit, currency = %a.currency, "budget threshold crossed");
                        self.alerts
                            .get_or_create(&AlertLabels {
                                tenant: self.tenants.label(&a.tenant),
                                threshold: t.to_string(),
                            })
                            .inc();
                        self.send(a);
                    }
                    Err(e) => {
                        // Not recorded: tried again on the next refresh.
                        tracing::warn!(extension = %self.id, budget = %a.budget, threshold = t, error = %e, "cannot record budget alert; will retry");
                    }
                }
            }
        }
    }

    /// Learns which crossings of current periods are already recorded, so a restart does
    /// not try to insert each of them again (an insert would only conflict).
    pub async fn preload(&self) {
        let now = crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64;
        match budget::recorded(&self.store, now).await {
            Ok(keys) => self.known().extend(keys),
            Err(e) => {
                tracing::warn!(extension = %self.id, error = %e, "cannot read recorded budget alerts")
            }
        }
    }

    /// Sends again the alerts this instance recorded but did not finish sending.
    pub async fn resume(self: &Arc<Self>) {
        if self.webhook.is_none() {
            return;
        }
        let now = crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64;
        match budget::undelivered(&self.store, &self.instance, now).await {
            Ok(list) => {
                for a in list {
                    tracing::info!(extension = %self.id, budget = %a.budget, threshold = a.threshold, "sending a budget alert left unsent by the previous run");
                    self.send(a);
                }
            }
            Err(e) => {
                tracing::warn!(extension = %self.id, error = %e, "cannot read undelivered budget alerts")
            }
        }
    }

    fn send(self: &Arc<Self>, a: Alert) {
        let me = self.clone();
        tokio::spawn(async move {
            let Some(w) = &me.webhook else {
                // Nothing to send: noted so that a webhook configured later does not send
                // this old crossing.
                if let Err(e) =
                    budget::finish_alert(&me.store, &a, 0, None, Some("no webhook configured"))
                        .await
                {
                    tracing::warn!(extension = %me.id, budget = %a.budget, error = %e, "cannot note the budget alert");
                }
                return;
            };
            let body = Bytes::from(payload(&a).to_string());
            let key = alert_key(&a);
            let mut backoff = w.cfg.initial_backoff;
            let mut attempt = 0u32;
            let outcome = loop {
                attempt += 1;
                match w.post_once(&body, &key).await {
                    Ok(()) => break Ok(()),
                    Err(e) if attempt >= w.cfg.max_attempts => break Err(e),
                    Err(e) => {
                        tracing::warn!(extension = %me.id, budget = %a.budget, threshold = a.threshold, attempt, error = %e, retry_in = ?backoff, "budget webhook failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(w.cfg.max_backoff);
                    }
                }
            };
            let now = crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64;
            let res = match &outcome {
                Ok(()) => {
                    tracing::info!(extension = %me.id, budget = %a.budget, threshold = a.threshold, attempts = attempt, "budget alert delivered");
                    budget::finish_alert(&me.store, &a, attempt, Some(now), None).await
                }
                Err(e) => {
                    me.webhook_failures.inc();
                    tracing::error!(extension = %me.id, budget = %a.budget, threshold = a.threshold, attempts = attempt, error = %e, "budget webhook gave up");
                    budget::finish_alert(&me.store, &a, attempt, None, Some(e)).await
                }
            };
            if let Err(e) = res {
                tracing::warn!(extension = %me.id, budget = %a.budget, error = %e, "cannot note the budget alert's delivery");
            }
        });
    }
}
