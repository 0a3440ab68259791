//! Where a ledger lives, as configuration: the `url`, password, `tls` and `sqlite` options
//! shared by the `ledger` exporter and the `budget` extension, and the instance name.

use crate::config::node::Slot;
use crate::config::{Diagnostics, Map};
use crate::ledger::store::{ConnectOptions, Synchronous, Target};
use crate::tls::NamedFile;

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

/// The connection options of a ledger as read (`url`, `password_file` / `password_env`,
/// `tls`, `sqlite.synchronous`), shared by the exporter and the `budget` extension: the files
/// and the environment variable are named, not read ([`TargetConfig::load`] does).
#[derive(Debug, Clone, Default)]
pub struct TargetConfig {
    /// `url` (required): `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`.
    pub url: Option<String>,
    /// `password_file`: the PostgreSQL password, from a file.
    pub password_file: Option<NamedFile>,
    /// `password_env`: the PostgreSQL password, from this environment variable (its
    /// problems go to the YAML path and place recorded with it).
    pub password_env: Option<(String, NamedFile)>,
    /// `tls`, when the section has one: the exporter `tls` options.
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// `sqlite.synchronous` (default `full`).
    pub synchronous: Option<Synchronous>,
    /// The section's path and the place of the problems found once the password is known
    /// (the URL's and the SQLite-only options').
    at: String,
    url_at: String,
    slot: Option<Slot>,
}

/// Reads the connection options of a ledger from `m` (no I/O).
pub fn read_target(m: &Map<'_>, d: &mut Diagnostics) -> TargetConfig {
    let mut cfg = TargetConfig {
        url: m.str("url", d),
        ..Default::default()
    };
    if cfg.url.as_deref().is_none_or(str::is_empty) && !m.has("url") {
        d.error(
            m.key_path("url"),
            "missing: sqlite:PATH (e.g. sqlite:./tollgate-data/ledger.db) or postgres://USER@HOST:PORT/DB",
        );
    }
    if let Some(f) = m.str("password_file", d) {
        cfg.password_file = Some(NamedFile {
            file: f,
            at: m.key_path("password_file"),
            slot: d.slot(),
        });
    }
    if let Some(var) = m.str("password_env", d) {
        cfg.password_env = Some((
            var,
            NamedFile {
                file: String::new(),
                at: m.key_path("password_env"),
                slot: d.slot(),
            },
        ));
    }
    if m.has("tls") {
        cfg.tls = Some(crate::tls::read_client(m, d));
    }
    if let Some(s) = m.map("sqlite", d) {
        match s.str("synchronous", d).as_deref() {
            None => {}
            Some("full") => cfg.synchronous = Some(Synchronous::Full),
            Some("normal") => cfg.synchronous = Some(Synchronous::Normal),
            Some(other) => d.error(
                s.key_path("synchronous"),
                format!("expected full or normal, found {other:?}"),
            ),
        }
        s.finish(d);
    }
    cfg.at = m.path().to_string();
    cfg.url_at = m.key_path("url");
    cfg.slot = Some(d.slot());
    cfg
}

impl TargetConfig {
    /// Reads the password (file or environment) and the TLS files and makes the target;
    /// `None` without a valid `url`. Problems are reported where their keys were read.
    pub fn load(&self, d: &mut Diagnostics) -> Option<Target> {
        let mut opts = ConnectOptions::default();
        if let Some(f) = &self.password_file {
            match std::fs::read_to_string(&f.file) {
                Ok(p) => opts.password = Some(p.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => d.error_at(f.slot, f.at.clone(), format!("cannot read {}: {e}", f.file)),
            }
        }
        if let Some((var, at)) = &self.password_env {
            if opts.password.is_some() {
                d.error_at(
                    at.slot,
                    at.at.clone(),
                    "set password_file or password_env, not both",
                );
            }
            match std::env::var(var) {
                Ok(p) if !p.is_empty() => opts.password = Some(p),
                _ => d.error_at(
                    at.slot,
                    at.at.clone(),
                    format!("environment variable {var} is not set or empty"),
                ),
            }
        }
        opts.tls = self.tls.as_ref().map(|t| t.load(d));
        opts.synchronous = self.synchronous;
        let slot = self.slot?;
        let url = self.url.as_ref()?;
        let target = match Target::parse(url, &opts) {
            Ok(t) => t,
            Err(e) => {
                d.error_at(slot, self.url_at.clone(), e.to_string());
                return None;
            }
        };
        if matches!(target, Target::Sqlite { .. })
            && (opts.password.is_some() || opts.tls.is_some())
        {
            d.error_at(
                slot,
                self.at.clone(),
                "password and tls apply to postgres:// ledgers only",
            );
        }
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_file_is_read_at_load_and_its_problem_keeps_its_place() {
        let doc = crate::config::load_str(
            "url: postgres://tollgate@db:5432/ledger\npassword_file: /nonexistent/pw\nsqlite: { synchronous: fast }\n",
        )
        .unwrap();
        let mut d = Diagnostics::default();
        let m = Map::new("exporters.ledger", &doc, &mut d).unwrap();
        let cfg = read_target(&m, &mut d);
        let shown = |d: &Diagnostics| -> Vec<String> {
            d.problems().iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(
            shown(&d),
            ["exporters.ledger.sqlite.synchronous: expected full or normal, found \"fast\""]
        );
        assert!(cfg.load(&mut d).is_some());
        let p = shown(&d);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("exporters.ledger.password_file: cannot read /nonexistent/pw: "),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("exporters.ledger.sqlite.synchronous: "),
            "{p:?}"
        );
    }
}
