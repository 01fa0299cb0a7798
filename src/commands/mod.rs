//! One module per subcommand; each has one entry function that orchestrates.

pub mod activity;
pub mod alerts;
pub mod ami;
pub mod backfill;
pub mod costs;
pub mod device;
pub mod doctor;
pub mod energy;
pub mod health;
pub mod ingest;
pub mod listen;
pub mod migrate;
pub mod notify;
pub mod reconcile;
pub mod report;
pub mod retention;
pub mod slots;
pub mod snapshot;
pub mod tariff;
