//! The runtime every service shares: configuration from the environment, telemetry,
//! `serve()` (health, reflection, per-request spans, graceful shutdown), access tokens,
//! the one error type and its mapping to `tonic::Status`, MongoDB connection and index
//! helpers, page tokens and validation helpers.
//!
//! Nothing service-specific lives here: no documents, no RPC handlers.

pub mod auth;
pub mod client;
pub mod config;
pub mod content;
pub mod error;
pub mod export;
pub mod faults;
pub mod metrics;
pub mod mongo;
pub mod paging;
pub mod recount;
pub mod serve;
pub mod telemetry;
pub mod time;
pub mod validate;

pub use error::{Error, Result};
