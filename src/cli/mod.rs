//! The command line's subcommands that are more than a call: `envelope` (sign, append,
//! verify `tg1` tokens), `rates` (check a rate table, price a request) and `ledger` (report,
//! completeness, dispute, verify, export, reconcile, close, allocate). `src/main.rs` parses
//! the arguments and dispatches here.

pub mod envelope;
pub mod ledger;
pub mod rates;
