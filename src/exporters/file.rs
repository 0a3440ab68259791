//! The `file` exporter: OTLP/JSON Lines, one export request per line, appended to `path`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::component::factory::{Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{BoxFuture, ExportError, Exporter, Payload};
use crate::config::{ComponentId, Diagnostics, Map};

/// A configured `file` exporter (the file is opened at start).
pub struct FileExporterConfig {
    id: ComponentId,
    path: PathBuf,
    strip_token: bool,
}

/// The `file` exporter's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `path` (required): the file to append OTLP/JSON lines to (its directory is created at
    /// start); empty when missing (reported).
    pub path: PathBuf,
    /// `strip_token` (default `true`): remove the envelope token from what is written.
    pub strip_token: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: PathBuf::new(),
            strip_token: true,
        }
    }
}

impl Component for FileExporterConfig {
    type Config = Config;
    type Built = Box<dyn ExporterBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        let path = m.str("path", d);
        if path.as_deref().is_none_or(str::is_empty) {
            d.error(
                m.key_path("path"),
                "missing: the file to append OTLP/JSON lines to",
            );
        }
        cfg.path = PathBuf::from(path.unwrap_or_default());
        cfg.strip_token = super::encode::parse_strip_token(m, d);
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        _d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        Some(Box::new(FileExporterConfig {
            id: id.clone(),
            path: cfg.path,
            strip_token: cfg.strip_token,
        }))
    }
}

type Job = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

impl ExporterBuilder for FileExporterConfig {
    fn start(self: Box<Self>, _ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String> {
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "exporters.{}.path: cannot create {}: {e}",
                    self.id,
                    dir.display()
                )
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                format!(
                    "exporters.{}.path: cannot open {}: {e}",
                    self.id,
                    self.path.display()
                )
            })?;
        let (tx, mut rx) = mpsc::channel::<Job>(64);
        let task = tokio::spawn(async move {
            let mut f = tokio::fs::File::from_std(file);
            while let Some((line, done)) = rx.recv().await {
                let res = async {
                    f.write_all(&line).await?;
                    f.flush().await
                }
                .await;
                let _ = done.send(res);
            }
            let _ = f.sync_all().await;
        });
        Ok(Arc::new(FileExporter {
            path: self.path,
            strip_token: self.strip_token,
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        }))
    }
}

pub struct FileExporter {
    path: PathBuf,
    strip_token: bool,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Encodes a payload as one OTLP/JSON line (hex ids, lowerCamelCase, enums as integers).
pub fn to_json_line(data: &Payload) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = match data {
        Payload::Traces(r) => serde_json::to_vec(r)?,
        Payload::Metrics(r) => serde_json::to_vec(r)?,
        Payload::Logs(r) => serde_json::to_vec(r)?,
    };
    line.push(b'\n');
    Ok(line)
}

impl Exporter for FileExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let stripped;
            let data = match data {
                Payload::Traces(r) if self.strip_token => {
                    stripped = Payload::Traces(super::encode::without_token(r).into_owned());
                    &stripped
                }
                d => d,
            };
            let line = to_json_line(data).map_err(|e| ExportError {
                retryable: false,
                status: None,
                retry_after: None,
                message: format!("cannot encode OTLP/JSON: {e}"),
            })?;
            let tx = self.tx.lock().await.clone();
            let closed = || ExportError {
                retryable: true,
                status: None,
                retry_after: None,
                message: "file exporter is shut down".into(),
            };
            let tx = tx.ok_or_else(closed)?;
            let (done_tx, done_rx) = oneshot::channel();
            tx.send((line, done_tx)).await.map_err(|_| closed())?;
            match done_rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ExportError {
                    retryable: true,
                    status: None,
                    retry_after: None,
                    message: format!("writing {} failed: {e}", self.path.display()),
                }),
                Err(_) => Err(closed()),
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.tx.lock().await.take();
            if let Some(t) = self.task.lock().await.take() {
                let _ = t.await;
            }
        })
    }
}
