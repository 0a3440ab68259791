//! Extensions: components outside the data path (health check, budget API). One module plus one line in
//! [`FACTORIES`] per type.

pub mod budget;
pub mod health_check;

use std::net::SocketAddr;

use crate::component::BoxFuture;
use crate::component::{ParseCtx, StartCtx};
use crate::config::{ComponentId, Diagnostics, Map};

pub struct RunningExtension {
    pub endpoint: Option<SocketAddr>,
}

pub trait ExtensionBuilder: Send {
    fn start(
        self: Box<Self>,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<RunningExtension, String>>;
}

type Factory =
    fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<Box<dyn ExtensionBuilder>>;

pub const FACTORIES: &[(&str, Factory)] = &[
    ("health_check", health_check::factory),
    ("budget", budget::factory),
];
