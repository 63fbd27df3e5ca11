//! Everything of oxkeeper that does I/O: listener and connections, the executor that applies committed
//! commands and serves reads, replication through openraft (a one-member cluster when standalone),
//! four-letter words and configuration.

pub mod apply_thread;
pub mod clock;
mod cold;
pub mod committed;
pub mod config;
pub mod connection;
pub mod executor;
pub mod fourlw;
pub mod home;
pub mod import;
mod linger;
pub mod replication;
pub mod server;
mod slots;
pub mod stats;
pub mod testing;

pub use config::Config;
pub use server::{run, start, Running, ServerError};
