//! The one error body of the gateway, Google's JSON error shape
//! (`{"error": {"code", "status", "message", "details": [{"field", "description"}]}}`),
//! and its one mapping from a service's gRPC status: the HTTP status by the usual
//! table, field violations carried over from `google.rpc.BadRequest`, and a
//! `google.rpc.RetryInfo` as `Retry-After`.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use social_kit::client::Peer;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// One wrong field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldViolation {
    /// The field, as named in the request (`username`, `media[1].url`).
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// The error itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorStatus {
    /// The HTTP status code.
    pub code: u16,
    /// The canonical error name (`INVALID_ARGUMENT`, `NOT_FOUND`, ...).
    pub status: String,
    /// For a person.
    pub message: String,
    /// Each bad field of the request, if that was the problem.
    pub details: Vec<FieldViolation>,
}

/// Every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorStatus,
}

/// An error answer, ready to send.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
    details: Vec<FieldViolation>,
    retry_after: Option<Duration>,
    /// An HTTP status no gRPC code names (413).
    http: Option<StatusCode>,
}

impl ApiError {
    /// `code` with `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new(), retry_after: None, http: None }
    }

    /// A 405: the route exists, not with this method (`Allow` says which it takes).
    pub fn method_not_allowed() -> Self {
        Self {
            http: Some(StatusCode::METHOD_NOT_ALLOWED),
            ..Self::new(Code::Unimplemented, "this route does not take that method")
        }
    }

    /// A 413: the body is larger than any valid request.
    pub fn too_large() -> Self {
        Self {
            http: Some(StatusCode::PAYLOAD_TOO_LARGE),
            ..Self::invalid("body", "is larger than any valid request")
        }
    }

    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let description = description.into();
        let field = field.into();
        Self {
            code: Code::InvalidArgument,
            message: format!("invalid argument: {field}: {description}"),
            details: vec![FieldViolation { field, description }],
            retry_after: None,
            http: None,
        }
    }

    /// A 422 naming `field`: well formed, but not acceptable with what came before it
    /// (an `Idempotency-Key` sent again with another request).
    pub fn unprocessable(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            code: Code::FailedPrecondition,
            http: Some(StatusCode::UNPROCESSABLE_ENTITY),
            ..Self::invalid(field, description)
        }
    }

    /// A 409 to be retried after `retry_after`: a conflicting request is in progress.
    pub fn in_progress(message: impl Into<String>, retry_after: Duration) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(Code::Aborted, message) }
    }

    #[cfg(test)]
    pub fn code(&self) -> Code {
        self.code
    }

    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 429 saying why, to be retried after `retry_after`.
    pub fn too_many_because(message: impl Into<String>, retry_after: Duration) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(Code::ResourceExhausted, message) }
    }

    /// A 429 that says when to come back.
    pub fn too_many(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(Code::ResourceExhausted, "too many requests; slow down and retry later")
        }
    }

    /// A service's answer (through `peer`): its own errors (not found, invalid, ...)
    /// pass through with their details; a service that cannot be reached or did not
    /// answer in time is 503 / 504.
    pub fn upstream(peer: &Peer, status: Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Unknown | Code::DeadlineExceeded => {
                Status::from(peer.error(status)).into()
            }
            _ => status.into(),
        }
    }

    /// The HTTP status of a gRPC code.
    pub fn http_status(code: Code) -> StatusCode {
        match code {
            Code::Ok => StatusCode::OK,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The canonical name of a gRPC code (`NOT_FOUND`).
fn canonical(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let details = status.get_error_details();
        let violations = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        let message = match status.code() {
            // Never a service's internal detail.
            Code::Internal | Code::Unknown | Code::DataLoss => "internal error".to_owned(),
            _ => status.message().to_owned(),
        };
        Self { code: status.code(), message, details: violations, retry_after, http: None }
    }
}

impl From<social_kit::Error> for ApiError {
    fn from(e: social_kit::Error) -> Self {
        Status::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.http.unwrap_or_else(|| Self::http_status(self.code));
        if status.is_server_error() {
            tracing::warn!(code = ?self.code, message = %self.message, "answered with an error");
        }
        let body = ErrorBody {
            error: ErrorStatus {
                code: status.as_u16(),
                status: canonical(self.code).to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        // A service that is down is worth retrying soon (a second, unless it said when).
        // Not a timeout: the request may have been carried out, and a retried POST
        // would do it twice.
        let retry_after =
            self.retry_after.or((self.code == Code::Unavailable).then_some(Duration::from_secs(1)));
        if let Some(after) = retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
