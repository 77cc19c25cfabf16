//! The admin batch: what operators do outside the customer API — tenants and keys, site and
//! queue control, campaigns, reports, the daily error digest, suppression files, retention and
//! tenant retirement. The `hikyaku` binary ([`cli`]) is a thin shell over these functions,
//! which tests call directly; every command it runs is written to `audit_events` ([`audit`]).
//!
//! # Layout
//!
//! - [`ctx`]: connections (PostgreSQL always, Redis when a command needs the queues).
//! - [`tenants`], [`keys`]: tenants (create, list, retire) and API keys.
//! - [`sites`]: pause, resume, rate override, and the fleet's view of every site.
//! - [`queue`]: depths, requeue, drain, inspect.
//! - [`campaigns`]: list, pause, resume, cancel; [`report`]: the per-campaign CSV.
//! - [`digest`]: deferrals and bounces grouped by normalized reply.
//! - [`suppressions`]: import and export files; [`purge`]: event retention.
//! - [`audit`]: the audit trail; [`progress`]: progress bars; [`cli`]: the command line.

pub mod audit;
pub mod campaigns;
pub mod cli;
pub mod ctx;
pub mod digest;
pub mod keys;
pub mod progress;
pub mod purge;
pub mod queue;
pub mod report;
pub mod sites;
pub mod suppressions;
pub mod tenants;

pub use ctx::Ctx;
pub use keys::{create_key, revoke_key};
pub use tenants::{create_tenant, CreatedTenant};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database refused.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Redis refused.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A file could not be read or written, or the OS random source failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Bad input (a usage error: exit code 2).
    #[error("{0}")]
    Invalid(String),
    /// No such thing (exit code 3).
    #[error("{0} not found")]
    NotFound(String),
    /// The action conflicts with the current state (exit code 4).
    #[error("{0}")]
    Conflict(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<crate::error::ApiError> for AdminError {
    fn from(e: crate::error::ApiError) -> Self {
        use crate::error::ApiError as A;
        match e {
            A::Invalid { field, detail } => AdminError::Invalid(format!("{field}: {detail}")),
            A::BadRequest { detail, .. } => AdminError::Invalid(detail),
            A::NotFound(what) => AdminError::NotFound(what.to_owned()),
            A::Conflict { detail, .. } => AdminError::Conflict(detail),
            A::Internal(s) => AdminError::Other(s),
            other => AdminError::Other(other.to_string()),
        }
    }
}

impl AdminError {
    /// The process exit code for this error: 2 bad input, 3 not found, 4 conflict, 1 else.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Invalid(_) => 2,
            AdminError::NotFound(_) => 3,
            AdminError::Conflict(_) => 4,
            _ => 1,
        }
    }
}
