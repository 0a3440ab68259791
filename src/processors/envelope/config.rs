//! The `envelope` processor's configuration: its options as read (no I/O: the key ring's
//! secrets are only named) and how they are built into a processor (secrets loaded, route
//! exporters checked, metrics registered).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::component::factory::{Built, Component, ProcessorSpec};
use crate::component::host::ParseCtx;
use crate::component::Signal;
use crate::config::time::time_at;
use crate::config::{ComponentId, Diagnostics, Map, Slot};
use crate::envelope::token::{EnvelopeStatus, IdentityField, KeyRing};
use crate::envelope::{load_ring, parse_key_specs, KeySpec, VerifyCache};

use super::reuse::ReuseTracker;
use super::{
    status_by_name, EnvelopeProcessor, Override, OverrideLabels, Policy, ProcLabels, SpanLabels,
    DEFAULT_OVERRIDE_STATUSES, N_STATUS, STATUS_NAMES,
};

/// A `on.<status>: { route: <exporter> }` entry; the exporter is checked to exist by build.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index of the status in [`STATUS_NAMES`].
    pub status: usize,
    /// The exporter id.
    pub exporter: String,
    /// The YAML path of the entry (`processors.<id>.on.<status>`).
    pub path: String,
    /// Where its problem goes among the others.
    pub slot: Slot,
}

/// The `envelope` processor's options, as read from its section.
#[derive(Debug, Clone)]
pub struct Config {
    /// `keys` (at least one): the key ring as configured. Its secrets are only named here;
    /// build reads them.
    pub keys: Vec<KeySpec>,
    /// Where problems loading the keys go among the others (after those of `keys`).
    pub keys_slot: Slot,
    /// `attributes: compact` (default `full`).
    pub compact: bool,
    /// `reload` (default `true`).
    pub reload: bool,
    /// `reload_interval` (default `5s`).
    pub reload_interval: Duration,
    /// `identity_attributes` (default none): `attribute: claim` pairs.
    pub identity: Vec<(String, IdentityField)>,
    /// `clock_skew` (default `300s`).
    pub clock_skew: Duration,
    /// `unattributed_tenant` (default `__unattributed__`).
    pub unattributed_tenant: String,
    /// `on.<status>` (default `pass`), by index of [`STATUS_NAMES`].
    pub policies: [Policy; N_STATUS],
    /// The `route` policies of `on`, in order.
    pub routes: Vec<Route>,
    /// `shadow` (default `false`).
    pub shadow: bool,
    /// `overrides` (default none).
    pub overrides: Vec<Override>,
    /// `cache_max_entries` (default `10000`).
    pub cache_max_entries: usize,
    /// `max_ingest_delay` (default `24h`).
    pub max_ingest_delay: Duration,
    /// `require_bound_credential` (default `false`).
    pub require_bound_credential: bool,
    /// `reuse_max_traces` (default `10`; `0`: off).
    pub reuse_max_traces: usize,
    /// `reuse_window` (default `1h`).
    pub reuse_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keys: Vec::new(),
            keys_slot: Slot::default(),
            compact: false,
            reload: true,
            reload_interval: Duration::from_secs(5),
            identity: Vec::new(),
            clock_skew: Duration::from_secs(300),
            unattributed_tenant: "__unattributed__".into(),
            policies: std::array::from_fn(|_| Policy::Pass),
            routes: Vec::new(),
            shadow: false,
            overrides: Vec::new(),
            cache_max_entries: 10_000,
            max_ingest_delay: Duration::from_secs(24 * 3600),
            require_bound_credential: false,
            reuse_max_traces: 10,
            reuse_window: Duration::from_secs(3600),
        }
    }
}

impl Component for EnvelopeProcessor {
    type Config = Config;
    type Built = ProcessorSpec;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        cfg.keys = parse_key_specs(m, d);
        cfg.compact = crate::processors::cost::config::parse_attributes_mode(m, d);
        if cfg.keys.is_empty() && !m.has("keys") {
            d.error(
                m.key_path("keys"),
                "missing: at least one key (id and secret_file or secret_env)",
            );
        }
        cfg.keys_slot = d.slot();
        if let Some(v) = m.bool("reload", d) {
            cfg.reload = v;
        }
        if let Some(v) = m.duration("reload_interval", d) {
            cfg.reload_interval = v;
        }
        if let Some(ia) = m.map("identity_attributes", d) {
            for (attr, y) in ia.entries(d) {
                let path = ia.key_path(&attr);
                match crate::config::node::scalar_string(y).map(|f| f.parse::<IdentityField>()) {
                    Some(Ok(f)) => cfg.identity.push((attr, f)),
                    _ => d.error(
                        path,
                        "expected a claim name: tenant_id, originator_id, workflow_id, operation_id or issuance_id",
                    ),
                }
            }
        }
        if let Some(v) = m.duration("clock_skew", d) {
            cfg.clock_skew = v;
        }
        if let Some(v) = m.str("unattributed_tenant", d) {
            cfg.unattributed_tenant = v;
        }
        if let Some(on) = m.map("on", d) {
            for (name, y) in on.entries(d) {
                let path = on.key_path(&name);
                let Some(si) = status_by_name(&name) else {
                    let hint = crate::config::node::closest(&name, STATUS_NAMES.iter().copied())
                        .map(|b| format!("; did you mean `{b}`?"))
                        .unwrap_or_default();
                    d.error(
                        path,
                        format!(
                            "unknown status{hint} (statuses: {})",
                            STATUS_NAMES.join(", ")
                        ),
                    );
                    continue;
                };
                if let Some(p) = parse_policy(&path, y, d) {
                    if let Policy::Route(t) = &p {
                        cfg.routes.push(Route {
                            status: si,
                            exporter: t.clone(),
                            path: format!("{path}.route"),
                            slot: d.slot(),
                        });
                    }
                    cfg.policies[si] = p;
                }
            }
        }
        if let Some(v) = m.bool("shadow", d) {
            cfg.shadow = v;
        }
        if let Some(items) = m.seq("overrides", d) {
            for (i, y) in items.iter().enumerate() {
                let Some(o) = Map::new(format!("{}[{i}]", m.key_path("overrides")), y, d) else {
                    continue;
                };
                let tenant = o.str("tenant", d);
                let key_id = o.str("key_id", d);
                if tenant.is_none() && key_id.is_none() {
                    d.error(
                        o.path().to_string(),
                        "an override names a tenant or a key_id",
                    );
                }
                let expires_at = time_at(&o, "expires", d);
                if expires_at.is_none() && !o.has("expires") {
                    d.error(
                        o.key_path("expires"),
                        "missing: break-glass overrides must expire (RFC 3339 time)",
                    );
                }
                let reason = o.str("reason", d).unwrap_or_default();
                if reason.is_empty() {
                    d.error(
                        o.key_path("reason"),
                        "missing: say why (an incident or ticket id), it is logged with every use",
                    );
                }
                let mut statuses = DEFAULT_OVERRIDE_STATUSES.to_vec();
                if let Some(list) = o.str_list("statuses", d) {
                    statuses.clear();
                    for (j, name) in list.iter().enumerate() {
                        let path = format!("{}[{j}]", o.key_path("statuses"));
                        match name.parse::<EnvelopeStatus>() {
                            Ok(EnvelopeStatus::Valid | EnvelopeStatus::Missing) | Err(_) => d.error(
                                path,
                                format!(
                                    "`{name}` cannot be overridden (statuses: malformed, unknown_key, revoked_key, bad_signature, expired, not_yet_valid, claims_mismatch)"
                                ),
                            ),
                            Ok(st) => statuses.push(st),
                        }
                    }
                }
                o.finish(d);
                cfg.overrides.push(Override {
                    tenant,
                    key_id,
                    expires_at: expires_at.unwrap_or(0),
                    reason,
                    statuses,
                });
            }
        }
        if let Some(v) = m.u64("cache_max_entries", d) {
            cfg.cache_max_entries = v as usize;
        }
        if let Some(v) = m.duration("max_ingest_delay", d) {
            cfg.max_ingest_delay = v;
        }
        if let Some(v) = m.bool("require_bound_credential", d) {
            cfg.require_bound_credential = v;
        }
        if let Some(v) = m.u64("reuse_max_traces", d) {
            cfg.reuse_max_traces = v as usize;
        }
        if let Some(v) = m.duration("reuse_window", d) {
            cfg.reuse_window = v;
        }
        if cfg.reuse_max_traces > 0 && cfg.reuse_window.is_zero() {
            d.error(m.key_path("reuse_window"), "must be more than 0");
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<ProcessorSpec> {
        let ring = match load_ring(&cfg.keys) {
            Ok(r) => r,
            Err(problems) => {
                for p in problems {
                    d.error_at(cfg.keys_slot, p.path, p.message);
                }
                KeyRing::new()
            }
        };
        let mut policies = cfg.policies;
        let mut divert_targets = Vec::new();
        for r in cfg.routes {
            if !ctx.exporter_ids.contains(&r.exporter) {
                let hint = crate::config::node::closest(
                    &r.exporter,
                    ctx.exporter_ids.iter().map(String::as_str),
                )
                .map(|b| format!("; did you mean `{b}`?"))
                .unwrap_or_default();
                d.error_at(
                    r.slot,
                    r.path,
                    format!(
                        "exporter `{}` is not defined under `exporters`{hint}",
                        r.exporter
                    ),
                );
                policies[r.status] = Policy::Pass;
            } else if !divert_targets.contains(&r.exporter) {
                divert_targets.push(r.exporter);
            }
        }
        let reuse = (cfg.reuse_max_traces > 0).then(|| ReuseTracker {
            max_traces: cfg.reuse_max_traces,
            window: cfg.reuse_window,
            max_entries: 100_000,
            hasher: Default::default(),
            map: Default::default(),
        });
        let metrics = &ctx.metrics;
        let spans = metrics.register_shared(
            "tollgate_envelope_spans",
            "Spans checked by an envelope processor, by outcome status and the policy applied",
            Family::<SpanLabels, Counter>::default,
        );
        let override_uses = metrics.register_shared(
            "tollgate_envelope_overrides",
            "Spans whose failing envelope passed as attributed through a break-glass override",
            Family::<OverrideLabels, Counter>::default,
        );
        let me = ProcLabels {
            processor: id.to_string(),
        };
        let reload_failures = metrics
            .register_shared(
                "tollgate_envelope_key_reload_failures",
                "Key ring reloads rejected (the previous ring stays in use)",
                Family::<ProcLabels, Counter>::default,
            )
            .get_or_create(&me)
            .clone();
        let reuse_count = metrics
            .register_shared(
                "tollgate_envelope_reused_issuances",
                "Issuance ids seen on more than reuse_max_traces distinct traces within reuse_window (counted once per window)",
                Family::<ProcLabels, Counter>::default,
            )
            .get_or_create(&me)
            .clone();
        let cache_entries = metrics
            .register_shared(
                "tollgate_envelope_cache_entries",
                "Verified tokens held in the envelope cache",
                Family::<ProcLabels, Gauge>::default,
            )
            .get_or_create(&me)
            .clone();
        for k in ring.iter() {
            tracing::info!(processor = %id, kid = %k.id, fingerprint = %k.fingerprint(), status = %k.status, "envelope key loaded");
        }
        let p = EnvelopeProcessor {
            id: id.to_string(),
            ring: RwLock::new(Arc::new(ring)),
            specs: cfg.keys,
            reload_interval: cfg.reload.then_some(cfg.reload_interval),
            identity: cfg.identity,
            skew: cfg.clock_skew.as_secs() as i64,
            unattributed: cfg.unattributed_tenant,
            policies,
            shadow: cfg.shadow,
            overrides: cfg.overrides,
            cache: VerifyCache::new(cfg.cache_max_entries),
            max_ingest_delay: cfg.max_ingest_delay.as_secs() as i64,
            require_bound_credential: cfg.require_bound_credential,
            reuse,
            reuse_count,
            spans,
            override_uses,
            reload_failures,
            cache_entries,
            compact: cfg.compact,
        };
        Some(ProcessorSpec {
            built: Built::Inline(Arc::new(p)),
            signals: &[Signal::Traces],
            divert_targets,
            emits_metrics: false,
        })
    }
}

/// Reads one `on.<status>` value; a route's exporter is checked by build.
fn parse_policy(path: &str, y: &yaml_rust2::Yaml, d: &mut Diagnostics) -> Option<Policy> {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) if s == "pass" => Some(Policy::Pass),
        Yaml::String(s) if s == "drop" => Some(Policy::Drop),
        Yaml::Hash(_) => {
            let m = Map::new(path.to_string(), y, d)?;
            let target = m.str("route", d);
            m.finish(d);
            let Some(t) = target else {
                d.error(
                    path.to_string(),
                    "expected pass, drop or { route: <exporter id> }",
                );
                return None;
            };
            Some(Policy::Route(t))
        }
        _ => {
            d.error(
                path.to_string(),
                "expected pass, drop or { route: <exporter id> }",
            );
            None
        }
    }
}
