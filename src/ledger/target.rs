//! Where a ledger lives, as configuration: the `url`, password, `tls` and `sqlite` options
//! shared by the `ledger` exporter and the `budget` extension, and the instance name.

use crate::config::{Diagnostics, Map};
use crate::ledger::store::{ConnectOptions, Synchronous, Target};

/// The instance name written on every row: `HOSTNAME`, else the kernel's host name.
pub fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "tollgate".into())
}

/// The connection options of a ledger (`url`, `password_file` / `password_env`, `tls`,
/// `sqlite.synchronous`) read from `m`, shared by the exporter and the `budget` extension.
pub fn parse_target(m: &Map<'_>, d: &mut Diagnostics) -> Option<Target> {
    let url = m.str("url", d);
    if url.as_deref().is_none_or(str::is_empty) && !m.has("url") {
        d.error(
            m.key_path("url"),
            "missing: sqlite:PATH (e.g. sqlite:./tollgate-data/ledger.db) or postgres://USER@HOST:PORT/DB",
        );
    }
    let mut opts = ConnectOptions::default();
    if let Some(f) = m.str("password_file", d) {
        match std::fs::read_to_string(&f) {
            Ok(p) => opts.password = Some(p.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => d.error(m.key_path("password_file"), format!("cannot read {f}: {e}")),
        }
    }
    if let Some(var) = m.str("password_env", d) {
        if opts.password.is_some() {
            d.error(
                m.key_path("password_env"),
                "set password_file or password_env, not both",
            );
        }
        match std::env::var(&var) {
            Ok(p) if !p.is_empty() => opts.password = Some(p),
            _ => d.error(
                m.key_path("password_env"),
                format!("environment variable {var} is not set or empty"),
            ),
        }
    }
    if m.has("tls") {
        opts.tls = Some(crate::tls::parse_client(m, d));
    }
    if let Some(s) = m.map("sqlite", d) {
        match s.str("synchronous", d).as_deref() {
            None => {}
            Some("full") => opts.synchronous = Some(Synchronous::Full),
            Some("normal") => opts.synchronous = Some(Synchronous::Normal),
            Some(other) => d.error(
                s.key_path("synchronous"),
                format!("expected full or normal, found {other:?}"),
            ),
        }
        s.finish(d);
    }
    let url = url?;
    let target = match Target::parse(&url, &opts) {
        Ok(t) => t,
        Err(e) => {
            d.error(m.key_path("url"), e.to_string());
            return None;
        }
    };
    if matches!(target, Target::Sqlite { .. }) && (opts.password.is_some() || opts.tls.is_some()) {
        d.error(
            m.path().to_string(),
            "password and tls apply to postgres:// ledgers only",
        );
    }
    Some(target)
}
