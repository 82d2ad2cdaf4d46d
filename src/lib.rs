//! A container registry speaking the OCI distribution spec v1.1 and the Docker
//! Registry HTTP API v2, on CNCF Distribution's filesystem layout.
//!
//! The library holds the whole domain; the programs in `bin/` are thin shells.
//! Dependencies point one way: `server -> browse -> storage -> oci`, with `config`
//! read by all of them. See ARCHITECTURE.md for the map and the invariants.

pub mod auth;
pub mod browse;
pub mod client;
pub mod config;
pub mod gc;
pub mod logging;
pub mod notify;
pub mod oci;
pub mod prometheus;
pub mod proxy;
pub mod server;
pub mod storage;
pub mod verify;
