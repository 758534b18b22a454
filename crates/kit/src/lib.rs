//! The runtime every service shares: configuration from the environment, telemetry,
//! `serve()` (health, reflection, per-request spans, graceful shutdown), access tokens,
//! the one error type and its mapping to `tonic::Status`, MongoDB connection and index
//! helpers (and the stand-in's dialect, `mongo::dialect`), page tokens, validation
//! helpers, and the table of the five services' names, variables and local addresses
//! (`peers`).
//!
//! Nothing service-specific lives here: no documents, no RPC handlers, no RPC names
//! (each service hands its internal and authenticating RPCs to the gate), no post or
//! comment rules (`social-content`).

pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod export;
pub mod faults;
pub mod metrics;
pub mod mongo;
pub mod paging;
pub mod peers;
pub mod recount;
pub mod serve;
pub mod telemetry;
pub mod time;
pub mod validate;

pub use error::{Error, Result};
