//! What a started component hands back: where it listens and how to stop it.

use std::net::SocketAddr;

use super::data::BoxFuture;

/// Stops a started component and resolves once it has (ports released, tasks ended).
pub type Stop = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A started receiver or extension: where it listens and how to stop it.
pub struct Started {
    /// (protocol, bound address), e.g. ("grpc", 127.0.0.1:4317).
    pub endpoints: Vec<(&'static str, SocketAddr)>,
    /// Stops accepting, waits for in-flight requests and releases the listeners.
    pub stop: Stop,
}

impl Started {
    /// A component that listens nowhere and has nothing to wait for on stop.
    pub fn nothing() -> Self {
        Started {
            endpoints: Vec::new(),
            stop: Box::new(|| Box::pin(async {})),
        }
    }

    /// Started tasks that end when `token` is cancelled: stop cancels it and waits for them.
    pub fn tasks(
        endpoints: Vec<(&'static str, SocketAddr)>,
        token: tokio_util::sync::CancellationToken,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> Self {
        Started {
            endpoints,
            stop: Box::new(move || {
                Box::pin(async move {
                    token.cancel();
                    for t in tasks {
                        let _ = t.await;
                    }
                })
            }),
        }
    }
}
