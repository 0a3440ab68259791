//! What wakes a processor's reload task: SIGHUP, a periodic tick (to notice changed files),
//! or service shutdown. Shared by the processors that reload files (`envelope`, `cost`).

use std::time::Duration;

/// Why the reload task woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// SIGHUP: reload now.
    Hangup,
    /// The tick passed: reload if files changed.
    Tick,
}

pub struct ReloadTrigger {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl ReloadTrigger {
    /// `on_hangup`: whether SIGHUP should wake the task at all.
    pub fn new(on_hangup: bool, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        ReloadTrigger {
            #[cfg(unix)]
            hup: on_hangup
                .then(|| {
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
                })
                .flatten(),
            shutdown,
        }
    }

    /// Waits for the next event; `None` once the service shuts down.
    pub async fn wait(&mut self, tick: Duration) -> Option<Wake> {
        #[cfg(unix)]
        let hup = async {
            match self.hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            _ = hup => Some(Wake::Hangup),
            _ = tokio::time::sleep(tick) => Some(Wake::Tick),
            _ = self.shutdown.changed() => None,
        }
    }
}
