//! The two backends behind one [`Store`]: an embedded SQLite file (the default, one gateway)
//! and PostgreSQL (a fleet writing one ledger). Both run the same schema and the same
//! exactly-once rule: the event key `(trace_id, span_id)` is unique; a re-sent event with the
//! same source digest is a duplicate (no-op), one with another digest is a conflict (the
//! first row stands; the second version is kept in `ledger_conflicts`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cost::registry::Published;
use crate::cost::Source;

use super::error::LedgerError;
use super::row::Row;
use super::schema::{self, Val, COLUMNS, MIGRATIONS, SCHEMA_VERSION};

/// What one committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub written: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// (trace id, span id) of each conflict, for the log.
    pub conflict_keys: Vec<(String, String)>,
}

/// How to reach a ledger.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite {
        path: PathBuf,
        /// `PRAGMA synchronous`: `full` (default: a commit survives power loss) or `normal`
        /// (survives a crash of the process; WAL).
        synchronous: Synchronous,
    },
    Postgres {
        config: Box<tokio_postgres::Config>,
        tls: Option<crate::tls::ClientTls>,
        shown: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

/// Options that are not part of a URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub password: Option<String>,
    pub tls: Option<crate::tls::ClientTls>,
    pub synchronous: Option<Synchronous>,
}

impl Target {
    /// `sqlite:PATH` (or `sqlite://PATH`) or `postgres://…` / `postgresql://…`.
    pub fn parse(url: &str, opts: &ConnectOptions) -> Result<Target, LedgerError> {
        let bad = |message: &str| LedgerError::Url {
            url: redact(url),
            message: message.to_string(),
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad(
                    "missing the database file, e.g. sqlite:./tollgate-data/ledger.db",
                ));
            }
            return Ok(Target::Sqlite {
                path: PathBuf::from(path),
                synchronous: opts.synchronous.unwrap_or(Synchronous::Full),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut config: tokio_postgres::Config = url
                .parse()
                .map_err(|e: tokio_postgres::Error| bad(&e.to_string()))?;
            if let Some(p) = &opts.password {
                config.password(p.as_bytes());
            }
            return Ok(Target::Postgres {
                config: Box::new(config),
                tls: opts.tls.clone(),
                shown: redact(url),
            });
        }
        Err(bad("expected sqlite:PATH or postgres://USER@HOST:PORT/DB"))
    }

    pub fn shown(&self) -> String {
        match self {
            Target::Sqlite { path, .. } => path.display().to_string(),
            Target::Postgres { shown, .. } => shown.clone(),
        }
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// An open ledger.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Closed periods as last seen by the write path (late events become adjustments).
    closed: Arc<super::closed::ClosedCache>,
}

enum Inner {
    Sqlite {
        conn: Arc<Mutex<rusqlite::Connection>>,
        path: PathBuf,
        known_tables: Mutex<HashSet<String>>,
    },
    Postgres {
        client: tokio_postgres::Client,
        known_tables: Mutex<HashSet<String>>,
        shown: String,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// `$1, $2, …, $n` (SQLite reads `$N` as a parameter bound by position, as PostgreSQL does).
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn insert_sql() -> String {
    format!(
        "INSERT INTO ledger_events ({}) VALUES ({}) ON CONFLICT (trace_id, span_id) DO NOTHING",
        COLUMNS.join(", "),
        placeholders(1, COLUMNS.len())
    )
}

const CONFLICT_SQL: &str = "INSERT INTO ledger_conflicts (trace_id, span_id, first_digest, second_digest, second_row, gateway_instance, seen_ns) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (trace_id, span_id, second_digest) DO NOTHING";
const TABLE_SQL: &str = "INSERT INTO ledger_rate_tables (digest, version, currency, sources, first_seen_ns) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (digest) DO NOTHING";
const DIGEST_SQL: &str =
    "SELECT source_digest FROM ledger_events WHERE trace_id = $1 AND span_id = $2";

fn sources_json(p: &Published) -> Result<String, LedgerError> {
    serde_json::to_string(&p.table.sources).map_err(|e| LedgerError::Io(e.to_string()))
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn sqlite_val(v: rusqlite::types::ValueRef<'_>) -> Val {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Text(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

type PgParam = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// [`Val`]s as PostgreSQL parameters (NULL is typed as text, which both bind sites accept).
fn pg_params(params: Vec<Val>) -> Vec<PgParam> {
    params
        .into_iter()
        .map(|v| -> PgParam {
            match v {
                Val::Null => Box::new(Option::<String>::None),
                Val::Int(i) => Box::new(i),
                Val::Text(s) => Box::new(s),
            }
        })
        .collect()
}

fn pg_refs(boxed: &[PgParam]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    boxed
        .iter()
        .map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn now_ns() -> i64 {
    crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64
}

/// The outcome for rows whose insert did nothing: same digest → duplicate, else conflict.
fn classify(
    row: &Row,
    existing: Option<String>,
    out: &mut WriteOutcome,
) -> Result<Option<(String, String)>, LedgerError> {
    match existing {
        Some(d) if d == row.source_digest => {
            out.duplicates += 1;
            Ok(None)
        }
        Some(first) => {
            out.conflicts += 1;
            out.conflict_keys
                .push((row.trace_id.clone(), row.span_id.clone()));
            let json = serde_json::to_string(row).map_err(|e| LedgerError::Io(e.to_string()))?;
            Ok(Some((first, json)))
        }
        // Not inserted yet not found: impossible inside one transaction; report it.
        None => Err(LedgerError::Database(format!(
            "event {}/{} was neither inserted nor found",
            row.trace_id, row.span_id
        ))),
    }
}

impl Store {
    /// Opens (creating the file or schema on first start) and migrates the ledger.
    pub async fn open(target: &Target) -> Result<Store, LedgerError> {
        match target {
            Target::Sqlite { path, synchronous } => {
                let path = path.clone();
                let sync = *synchronous;
                tokio::task::spawn_blocking(move || open_sqlite(&path, sync))
                    .await
                    .map_err(|e| LedgerError::Io(e.to_string()))?
            }
            Target::Postgres { config, tls, shown } => {
                open_postgres(config, tls.as_ref(), shown).await
            }
        }
    }

    /// Whether the connection is gone for good (PostgreSQL; a SQLite file never is).
    pub fn is_closed(&self) -> bool {
        match &*self.inner {
            Inner::Sqlite { .. } => false,
            Inner::Postgres { client, .. } => client.is_closed(),
        }
    }

    /// Whether this is a PostgreSQL ledger (else an SQLite file).
    pub fn is_postgres(&self) -> bool {
        matches!(&*self.inner, Inner::Postgres { .. })
    }

    pub fn describe(&self) -> String {
        match &*self.inner {
            Inner::Sqlite { path, .. } => path.display().to_string(),
            Inner::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// Writes one batch in one transaction; returns after it committed.
    pub async fn write(
        &self,
        rows: Vec<Row>,
        tables: Vec<Published>,
    ) -> Result<WriteOutcome, LedgerError> {
        match &*self.inner {
            Inner::Sqlite { .. } => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.write_sqlite(&rows, &tables))
                    .await
                    .map_err(|e| LedgerError::Io(e.to_string()))?
            }
            Inner::Postgres { .. } => self.write_postgres(&rows, &tables).await,
        }
    }

    fn write_sqlite(
        &self,
        rows: &[Row],
        tables: &[Published],
    ) -> Result<WriteOutcome, LedgerError> {
        let Inner::Sqlite {
            conn, known_tables, ..
        } = &*self.inner
        else {
            return Err(LedgerError::Closed);
        };
        let mut conn = lock(conn);
        let tx = conn.transaction()?;
        let mut out = WriteOutcome::default();
        let mut inserted: Vec<&Row> = Vec::new();
        let new_tables: Vec<&Published> = {
            let known = lock(known_tables);
            tables
                .iter()
                .filter(|p| !known.contains(&p.digest))
                .collect()
        };
        {
            let mut st = tx.prepare_cached(TABLE_SQL)?;
            for p in &new_tables {
                st.execute(rusqlite::params![
                    p.digest,
                    p.table.version,
                    p.table.currency,
                    sources_json(p)?,
                    now_ns()
                ])?;
            }
            let mut ins = tx.prepare_cached(&insert_sql())?;
            let mut sel = tx.prepare_cached(DIGEST_SQL)?;
            let mut conf = tx.prepare_cached(CONFLICT_SQL)?;
            for r in rows {
                let vals = schema::to_vals(r);
                if ins.execute(rusqlite::params_from_iter(vals.iter()))? == 1 {
                    out.written += 1;
                    inserted.push(r);
                    continue;
                }
                let existing: Option<String> = sel
                    .query_row(rusqlite::params![r.trace_id, r.span_id], |x| x.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                if let Some((first, json)) = classify(r, existing, &mut out)? {
                    conf.execute(rusqlite::params![
                        r.trace_id,
                        r.span_id,
                        first,
                        r.source_digest,
                        json,
                        r.gateway_instance,
                        now_ns()
                    ])?;
                }
            }
        }
        super::rollup_write::apply_sqlite(&tx, &inserted)?;
        super::closed::adjust_sqlite(&tx, &self.closed, &inserted)?;
        tx.commit()?;
        let mut known = lock(known_tables);
        known.extend(new_tables.iter().map(|p| p.digest.clone()));
        Ok(out)
    }

    async fn write_postgres(
        &self,
        rows: &[Row],
        tables: &[Published],
    ) -> Result<WriteOutcome, LedgerError> {
        let Inner::Postgres {
            client,
            known_tables,
            ..
        } = &*self.inner
        else {
            return Err(LedgerError::Closed);
        };
        let mut out = WriteOutcome::default();
        let new_tables: Vec<&Published> = {
            let known = lock(known_tables);
            tables
                .iter()
                .filter(|p| !known.contains(&p.digest))
                .collect()
        };
        // One statement for the whole batch: arrays per column, unnested server-side.
        let cols: Vec<Vec<Val>> = {
            let mut cols = vec![Vec::with_capacity(rows.len()); COLUMNS.len()];
            for r in rows {
                for (i, v) in schema::to_vals(r).into_iter().enumerate() {
                    cols[i].push(v);
                }
            }
            cols
        };
        let mut texts: Vec<Vec<Option<String>>> = Vec::new();
        let mut ints: Vec<Vec<Option<i64>>> = Vec::new();
        let mut casts = Vec::with_capacity(COLUMNS.len());
        for (i, c) in COLUMNS.iter().enumerate() {
            if schema::is_int_column(c) {
                ints.push(cols[i].iter().map(Val::as_int).collect());
                casts.push(("int8", ints.len() - 1));
            } else {
                texts.push(
                    cols[i]
                        .iter()
                        .map(|v| v.as_text().map(str::to_string))
                        .collect(),
                );
                casts.push(("text", texts.len() - 1));
            }
        }
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        let mut exprs = Vec::new();
        for (n, (ty, idx)) in casts.iter().enumerate() {
            if *ty == "int8" {
                params.push(&ints[*idx]);
            } else {
                params.push(&texts[*idx]);
            }
            exprs.push(format!("${}::{ty}[]", n + 1));
        }
        let sql = format!(
            "INSERT INTO ledger_events ({cols}) SELECT * FROM UNNEST({exprs}) ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id",
            cols = COLUMNS.join(", "),
            exprs = exprs.join(", ")
        );
        client.batch_execute("BEGIN").await?;
        let res: Result<(), LedgerError> = async {
            for p in &new_tables {
                client
                    .execute(
                        TABLE_SQL,
                        &[
                            &p.digest,
                            &p.table.version,
                            &p.table.currency,
                            &sources_json(p)?,
                            &now_ns(),
                        ],
                    )
                    .await?;
            }
            let inserted: HashSet<(String, String)> = if rows.is_empty() {
                HashSet::new()
            } else {
                let mut set = HashSet::new();
                for r in client.query(&sql, &params).await? {
                    set.insert((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?));
                }
                set
            };
            out.written = inserted.len() as u64;
            // Rows of this batch that were not inserted: re-sends (or a key repeated within
            // the batch, whose first occurrence was inserted above).
            let mut claimed: HashSet<(&str, &str)> = HashSet::new();
            let mut new_rows: Vec<&Row> = Vec::new();
            for r in rows {
                let key = (r.trace_id.as_str(), r.span_id.as_str());
                if inserted.contains(&(r.trace_id.clone(), r.span_id.clone()))
                    && claimed.insert(key)
                {
                    new_rows.push(r);
                    continue;
                }
                let existing = match client
                    .query_opt(DIGEST_SQL, &[&r.trace_id, &r.span_id])
                    .await?
                {
                    Some(x) => Some(x.try_get::<_, String>(0)?),
                    None => None,
                };
                if let Some((first, json)) = classify(r, existing, &mut out)? {
                    client
                        .execute(
                            CONFLICT_SQL,
                            &[
                                &r.trace_id,
                                &r.span_id,
                                &first,
                                &r.source_digest,
                                &json,
                                &r.gateway_instance,
                                &now_ns(),
                            ],
                        )
                        .await?;
                }
            }
            super::rollup_write::apply_postgres(client, &new_rows).await?;
            super::closed::adjust_postgres(client, &self.closed, &new_rows).await?;
            Ok(())
        }
        .await;
        match res {
            Ok(()) => {
                client.batch_execute("COMMIT").await?;
                let mut known = lock(known_tables);
                known.extend(new_tables.iter().map(|p| p.digest.clone()));
                Ok(out)
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// Runs a read-only query; every value as a [`Val`].
    pub async fn select(&self, sql: &str, params: Vec<Val>) -> Result<Vec<Vec<Val>>, LedgerError> {
        match &*self.inner {
            Inner::Sqlite { conn, .. } => {
                let conn = conn.clone();
                let sql = sql.to_string();
                tokio::task::spawn_blocking(move || -> Result<Vec<Vec<Val>>, LedgerError> {
                    let conn = lock(&conn);
                    let mut st = conn.prepare_cached(&sql)?;
                    let n = st.column_count();
                    let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
                    let mut out = Vec::new();
                    while let Some(r) = rows.next()? {
                        let mut v = Vec::with_capacity(n);
                        for i in 0..n {
                            v.push(sqlite_val(r.get_ref(i)?));
                        }
                        out.push(v);
                    }
                    Ok(out)
                })
                .await
                .map_err(|e| LedgerError::Io(e.to_string()))?
            }
            Inner::Postgres { client, .. } => {
                let boxed = pg_params(params);
                let refs = pg_refs(&boxed);
                let rows = client.query(sql, &refs).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let mut v = Vec::with_capacity(r.len());
                    for (i, c) in r.columns().iter().enumerate() {
                        use tokio_postgres::types::Type;
                        let t = c.type_();
                        let val = if *t == Type::INT8 {
                            r.try_get::<_, Option<i64>>(i)?.map_or(Val::Null, Val::Int)
                        } else if *t == Type::INT4 {
                            r.try_get::<_, Option<i32>>(i)?
                                .map_or(Val::Null, |x| Val::Int(x.into()))
                        } else {
                            r.try_get::<_, Option<String>>(i)?
                                .map_or(Val::Null, Val::Text)
                        };
                        v.push(val);
                    }
                    out.push(v);
                }
                Ok(out)
            }
        }
    }

    /// Runs a statement that changes the ledger (used by commands that record something).
    pub async fn execute(&self, sql: &str, params: Vec<Val>) -> Result<u64, LedgerError> {
        match &*self.inner {
            Inner::Sqlite { conn, .. } => {
                let conn = conn.clone();
                let sql = sql.to_string();
                tokio::task::spawn_blocking(move || -> Result<u64, LedgerError> {
                    let conn = lock(&conn);
                    Ok(conn.execute(&sql, rusqlite::params_from_iter(params.iter()))? as u64)
                })
                .await
                .map_err(|e| LedgerError::Io(e.to_string()))?
            }
            Inner::Postgres { client, .. } => {
                let boxed = pg_params(params);
                let refs = pg_refs(&boxed);
                Ok(client.execute(sql, &refs).await?)
            }
        }
    }

    /// Runs statements in one transaction: all of them take effect, or none.
    pub async fn execute_all(&self, stmts: Vec<(String, Vec<Val>)>) -> Result<u64, LedgerError> {
        match &*self.inner {
            Inner::Sqlite { conn, .. } => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || -> Result<u64, LedgerError> {
                    let mut conn = lock(&conn);
                    let tx = conn.transaction()?;
                    let mut n = 0u64;
                    for (sql, params) in &stmts {
                        n += tx.execute(sql, rusqlite::params_from_iter(params.iter()))? as u64;
                    }
                    tx.commit()?;
                    Ok(n)
                })
                .await
                .map_err(|e| LedgerError::Io(e.to_string()))?
            }
            Inner::Postgres { client, .. } => {
                client.batch_execute("BEGIN").await?;
                let mut n = 0u64;
                for (sql, params) in stmts {
                    match self.execute(&sql, params).await {
                        Ok(k) => n += k,
                        Err(e) => {
                            let _ = client.batch_execute("ROLLBACK").await;
                            return Err(e);
                        }
                    }
                }
                client.batch_execute("COMMIT").await?;
                Ok(n)
            }
        }
    }

    /// The sources of a stored rate table.
    pub async fn rate_table(
        &self,
        digest: &str,
    ) -> Result<Option<(String, Vec<Source>)>, LedgerError> {
        let rows = self
            .select(
                "SELECT version, sources FROM ledger_rate_tables WHERE digest = $1",
                vec![Val::Text(digest.to_string())],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let version = r[0].as_text().unwrap_or_default().to_string();
        let sources: Vec<Source> = serde_json::from_str(r[1].as_text().unwrap_or("[]"))
            .map_err(|e| LedgerError::Corrupt(format!("rate table {digest}: {e}")))?;
        Ok(Some((version, sources)))
    }
}

fn open_sqlite(path: &Path, sync: Synchronous) -> Result<Store, LedgerError> {
    let shown = path.display().to_string();
    let open_err = |message: String| LedgerError::Open {
        target: shown.clone(),
        message,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut conn = rusqlite::Connection::open(path).map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| open_err(e.to_string()))?;
    // The first statement reads the header: a file that is not a SQLite database fails here.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| {
            open_err(format!(
                "{e} (is it a SQLite database? a damaged file must be restored or moved away)"
            ))
        })?;
    let level = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(|e| open_err(e.to_string()))?;
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| open_err(format!("integrity check failed: {e}")))?;
    if check != "ok" {
        return Err(open_err(format!("integrity check failed: {check}")));
    }
    let tx = conn.transaction().map_err(|e| open_err(e.to_string()))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS tollgate_ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    let current: i64 = tx
        .query_row(
            "SELECT value FROM tollgate_ledger_meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|v| v.parse().unwrap_or(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    if current > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            target: shown,
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for i in (current as usize)..MIGRATIONS.len() {
        tx.execute_batch(schema::sqlite_migration(i))?;
        tx.execute(
            "INSERT INTO tollgate_ledger_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![(i as i64 + 1).to_string()],
        )?;
    }
    tx.commit()?;
    if current < SCHEMA_VERSION {
        tracing::info!(ledger = %shown, from = current, to = SCHEMA_VERSION, "ledger schema migrated");
    }
    Ok(Store {
        inner: Arc::new(Inner::Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            known_tables: Mutex::new(HashSet::new()),
        }),
        closed: Default::default(),
    })
}

async fn open_postgres(
    config: &tokio_postgres::Config,
    tls: Option<&crate::tls::ClientTls>,
    shown: &str,
) -> Result<Store, LedgerError> {
    let open_err = |message: String| LedgerError::Open {
        target: shown.to_string(),
        message,
    };
    let use_tls = tls.is_some_and(|t| !t.insecure)
        && config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable;
    let client = if use_tls {
        let t = tls.cloned().unwrap_or_default();
        let rustls = t
            .rustls_config()
            .map_err(|e| open_err(format!("tls: {e}")))?;
        let mut rc = (*rustls).clone();
        rc.alpn_protocols.clear();
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(rc);
        let (client, connection) = config
            .connect(connector)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        spawn_connection(connection, shown.to_string());
        client
    } else {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        spawn_connection(connection, shown.to_string());
        client
    };
    client
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(7460121); CREATE TABLE IF NOT EXISTS tollgate_ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .await
        .map_err(|e| open_err(LedgerError::from(e).to_string()))?;
    let migrate = async {
        let current: i64 = match client
            .query_opt(
                "SELECT value FROM tollgate_ledger_meta WHERE key = 'schema_version'",
                &[],
            )
            .await?
        {
            Some(r) => r.try_get::<_, String>(0)?.parse().unwrap_or(0),
            None => 0,
        };
        if current > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                target: shown.to_string(),
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            client.batch_execute(m).await?;
            client
                .execute(
                    "INSERT INTO tollgate_ledger_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&(i as i64 + 1).to_string()],
                )
                .await?;
        }
        if current < SCHEMA_VERSION {
            tracing::info!(ledger = %shown, from = current, to = SCHEMA_VERSION, "ledger schema migrated");
        }
        Ok(())
    }
    .await;
    match migrate {
        Ok(()) => client.batch_execute("COMMIT").await?,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    Ok(Store {
        inner: Arc::new(Inner::Postgres {
            client,
            known_tables: Mutex::new(HashSet::new()),
            shown: shown.to_string(),
        }),
        closed: Default::default(),
    })
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>, shown: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(ledger = %shown, error = %e, "ledger connection closed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = ConnectOptions::default();
        assert!(
            matches!(Target::parse("sqlite:./x.db", &o), Ok(Target::Sqlite { path, .. }) if path == Path::new("./x.db"))
        );
        assert!(
            matches!(Target::parse("sqlite:///tmp/x.db", &o), Ok(Target::Sqlite { path, .. }) if path == Path::new("/tmp/x.db"))
        );
        assert!(Target::parse("sqlite:", &o).is_err());
        assert!(Target::parse("mysql://x", &o)
            .unwrap_err()
            .to_string()
            .contains("expected sqlite:PATH or postgres://"));
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }
}
