//! The one error type of every service, and its one mapping to `tonic::Status`.
//!
//! Handlers return `Result<_, Error>` and use `?`; the mapping decides what a client may
//! see. `Internal` errors are logged with their source and reach the client only as
//! "internal error". MongoDB driver errors are classified in [`Error::from_mongo`].

use std::fmt;

use mongodb::error::{ErrorKind, WriteFailure};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Result with the kit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One wrong field of a request: its path (`user.email`, `ids[3]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request message.
    pub field: String,
    /// What is wrong with it, for a person.
    pub description: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// What a user hears when acting on an account it blocks (following it, liking or
/// commenting on what it made).
pub const UNBLOCK_FIRST: &str = "you block this user: unblock them first";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names a field.
    #[error("invalid argument: {}", join(.0))]
    InvalidArgument(Vec<Violation>),
    /// The resource does not exist (or was deleted).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique value (`field`) is already taken.
    #[error("{field} is already taken")]
    AlreadyExists {
        /// The request field whose value is taken.
        field: &'static str,
    },
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Valid credentials, but not allowed to touch this resource.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The request cannot be carried out in the state things are in (the message says
    /// what must change first, e.g. an unblock before a follow).
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// A store or peer cannot be reached; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A peer did not answer in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A stream consumer fell too far behind.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller is refused for a while (too many attempts); `RESOURCE_EXHAUSTED` with
    /// a `google.rpc.RetryInfo` saying when to try again.
    #[error("{message}")]
    Throttled {
        /// For the client.
        message: String,
        /// When it may try again.
        retry_after: std::time::Duration,
    },
    /// The service has no capacity for this now (its bounded work queue is full);
    /// `UNAVAILABLE` with a `google.rpc.RetryInfo`.
    #[error("{message}")]
    Overloaded {
        /// For the client.
        message: String,
        /// When it may try again.
        retry_after: std::time::Duration,
    },
    /// A bug. The source is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(#[source] anyhow::Error),
}

fn join(v: &[Violation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// A single-field `InvalidArgument`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Any error as an internal one (a bug).
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    /// Classifies a MongoDB driver error: unreachable → `Unavailable`, anything else →
    /// `Internal`. Duplicate keys are `Internal` here too: only the caller knows which
    /// request field a unique index protects, so it checks [`is_duplicate_key`] first.
    pub fn from_mongo(err: mongodb::error::Error) -> Self {
        if is_unavailable(&err) {
            Self::Unavailable("the database is unavailable; retry later".into())
        } else {
            Self::Internal(anyhow::Error::new(err).context("mongodb"))
        }
    }
}

impl From<mongodb::error::Error> for Error {
    fn from(err: mongodb::error::Error) -> Self {
        Self::from_mongo(err)
    }
}

/// Whether a driver error is a unique-index violation (code 11000), in whichever
/// error kind the driver wraps it.
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => {
            e.write_errors.iter().flatten().any(|w| w.code == DUPLICATE_KEY)
        }
        _ => false,
    }
}

/// Whether a driver error means "the database cannot be reached right now".
/// Whether a failure is worth retrying as it is: something it depends on is down,
/// slow or overloaded (a database that cannot be reached, a peer answering
/// `UNAVAILABLE` or `DEADLINE_EXCEEDED`), as opposed to a request or message that will
/// fail the same way every time. Looks through the whole chain of causes.
pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<Error>() {
            match e {
                Error::Unavailable(_) | Error::DeadlineExceeded(_) => true,
                Error::Internal(inner) => is_transient(inner),
                _ => false,
            }
        } else if let Some(status) = cause.downcast_ref::<Status>() {
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
        } else if let Some(e) = cause.downcast_ref::<mongodb::error::Error>() {
            is_unavailable(e)
        } else {
            false
        }
    })
}

fn is_unavailable(err: &mongodb::error::Error) -> bool {
    // Codes a primary step-down or shutdown answers with (NotWritablePrimary, ...).
    const TRANSIENT: &[i32] = &[6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];
    match err.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(e) => TRANSIENT.contains(&e.code),
        _ => {
            err.contains_label("RetryableWriteError")
                || err.contains_label("TransientTransactionError")
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let message = format!("invalid argument: {}", join(&violations));
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::AlreadyExists { field } => Status::with_error_details(
                Code::AlreadyExists,
                format!("{field} is already taken"),
                ErrorDetails::with_bad_request(vec![FieldViolation::new(
                    field,
                    "is already taken",
                )]),
            ),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => {
                tracing::warn!(error = %m, "unavailable");
                Status::unavailable(m)
            }
            Error::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Throttled { message, retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Overloaded { message, retry_after } => {
                tracing::warn!(error = %message, "overloaded");
                Status::with_error_details(
                    Code::Unavailable,
                    message,
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            Error::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Collects the violations of one request, so that a client hears of every bad field
/// at once: up to [`MAX_VIOLATIONS`] of them, the first found. An answer is bounded as
/// the request is not: the violations travel in the status's trailer, and one of a few
/// hundred kilobytes (a violation per item of a flooded list) exceeds what an HTTP/2
/// peer accepts in headers, which then ends the whole connection and every other call
/// on it (a neighbour's too, through a shared channel).
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

/// The most violations one answer names.
pub const MAX_VIOLATIONS: usize = 32;

impl Violations {
    /// Records that `field` is wrong (nothing once [`MAX_VIOLATIONS`] are recorded).
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.0.len() < MAX_VIOLATIONS {
            self.0.push(Violation { field: field.into(), description: description.into() });
        }
    }

    /// Records the violation of a check that returned `Err(description)`.
    pub fn check(&mut self, field: &str, result: std::result::Result<(), String>) {
        if let Err(d) = result {
            self.add(field, d);
        }
    }

    /// Keeps the value of a parse, or records its violation.
    pub fn take<T>(&mut self, field: &str, result: std::result::Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(d) => {
                self.add(field, d);
                None
            }
        }
    }

    /// `Ok` when nothing was recorded, else one `InvalidArgument` with all of them.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_field() {
        let mut v = Violations::default();
        v.add("username", "too short");
        v.add("email", "missing @");
        let status = Status::from(v.finish().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["username", "email"]);
    }

    #[test]
    fn an_answer_names_at_most_the_first_violations() {
        let mut v = Violations::default();
        for i in 0..1000 {
            v.add(format!("ids[{i}]"), "must be a 24-character hex id");
        }
        let status = Status::from(v.finish().unwrap_err());
        let details = status.get_error_details();
        let fields = &details.bad_request().unwrap().field_violations;
        assert_eq!(fields.len(), MAX_VIOLATIONS);
        assert_eq!(fields[MAX_VIOLATIONS - 1].field, format!("ids[{}]", MAX_VIOLATIONS - 1));
    }

    #[test]
    fn internal_hides_its_source() {
        let status = Status::from(Error::internal(anyhow::anyhow!("secret detail")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn transient_failures_are_told_from_permanent_ones() {
        let transient = [
            anyhow::Error::new(Error::Unavailable("db".into())),
            anyhow::Error::new(Status::unavailable("peer down")).context("user service"),
            anyhow::Error::new(Status::deadline_exceeded("slow")),
        ];
        for e in &transient {
            assert!(is_transient(e), "{e:#}");
        }
        let permanent = [
            anyhow::anyhow!("bad payload"),
            anyhow::Error::new(Error::NotFound("post")),
            anyhow::Error::new(Status::invalid_argument("no")),
            anyhow::Error::new(Status::resource_exhausted("too big")),
            anyhow::Error::new(std::io::Error::other("not a dependency")),
            anyhow::Error::new(Error::internal(anyhow::anyhow!("bug"))),
        ];
        for e in &permanent {
            assert!(!is_transient(e), "{e:#}");
        }
    }
}
