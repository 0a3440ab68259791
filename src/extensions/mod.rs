//! Extensions: components outside the data path (health check, budget API). One module plus one line in
//! [`FACTORIES`] per type.

pub mod budget;
pub mod health_check;

use crate::component::factory::{factory, ExtensionBuilder};

type Factory = crate::component::factory::Factory<Box<dyn ExtensionBuilder>>;

pub const FACTORIES: &[(&str, Factory)] = &[
    ("health_check", factory::<health_check::HealthCheck>),
    ("budget", factory::<budget::BudgetConfig>),
];
