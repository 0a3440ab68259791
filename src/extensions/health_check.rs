//! The `health_check` extension: `GET <path>` answers 200 once every pipeline runs and 503
//! while the gateway starts or shuts down.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;

use crate::component::factory::{Component, ExtensionBuilder, Started};
use crate::component::host::{Health, ParseCtx, StartCtx};
use crate::component::BoxFuture;
use crate::config::node::check_endpoint;
use crate::config::{ComponentId, Diagnostics, Map};

pub struct HealthCheck {
    id: ComponentId,
    endpoint: String,
    path: String,
}

/// The `health_check` extension's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `endpoint` (default `127.0.0.1:13133`).
    pub endpoint: String,
    /// `path` (default `/`).
    pub path: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: "127.0.0.1:13133".to_string(),
            path: "/".to_string(),
        }
    }
}

impl Component for HealthCheck {
    type Config = Config;
    type Built = Box<dyn ExtensionBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        if let Some(e) = m.str("endpoint", d) {
            cfg.endpoint = e;
        }
        check_endpoint(m, &cfg.endpoint, d);
        if let Some(p) = m.str("path", d) {
            cfg.path = p;
        }
        if !cfg.path.starts_with('/') {
            d.error(m.key_path("path"), "must start with `/`");
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        _d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        Some(Box::new(HealthCheck {
            id: id.clone(),
            endpoint: cfg.endpoint,
            path: cfg.path,
        }))
    }
}

impl ExtensionBuilder for HealthCheck {
    fn start(self: Box<Self>, ctx: &StartCtx) -> BoxFuture<'static, Result<Started, String>> {
        let health = ctx.health.clone();
        let shutdown = ctx.shutdown.clone();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&self.endpoint)
                .await
                .map_err(|e| {
                    format!(
                        "extensions.{}.endpoint: cannot listen on {}: {e}",
                        self.id, self.endpoint
                    )
                })?;
            let listener = crate::netguard::GuardedListener::new(
                listener,
                crate::netguard::Limits::small_endpoint(),
                format!("extensions.{}", self.id),
            );
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let h = health.clone();
            let app = axum::Router::new().route(
                &self.path,
                get(move || {
                    let h = Arc::clone(&h);
                    async move {
                        match Health::from_u8(h.load(Ordering::Acquire)) {
                            Health::Ready => (StatusCode::OK, "{\"status\":\"Server available\"}"),
                            Health::Starting => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "{\"status\":\"Server starting\"}",
                            ),
                            Health::Stopping => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "{\"status\":\"Server shutting down\"}",
                            ),
                        }
                    }
                }),
            );
            let id = self.id.clone();
            let serving = shutdown.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(serving.cancelled_owned())
                    .await
                {
                    tracing::error!(extension = %id, error = %e, "health check server failed");
                }
            });
            tracing::info!(extension = %self.id, endpoint = %addr, "health check listening");
            Ok(Started::tasks(vec![("http", addr)], shutdown, vec![task]))
        })
    }
}
