//! `Idempotency-Key` on the routes that create (Stripe's semantics): the first request
//! with a key runs; the same key with the same request, within 24 hours, gets the same
//! answer again (`Idempotent-Replayed: true`) without running; the same key with another
//! request is a 422; while the first still runs, a 409 with `Retry-After`. Keys are the
//! caller's own (an account's, or the anonymous callers' for sign-up and login).
//!
//! Remembered in Redis ([`crate::shared`]), so that every replica sees them. An answer
//! is remembered when the request ran to a verdict (2xx, 403, 404, 409); a refusal
//! before it ran (400, 401, 413, 422, 429) or a failure whose outcome is unknown (5xx)
//! frees the key, and the retry runs again. For that retry, and for a crash between
//! running and remembering, the services hold the last line: the gateway passes each
//! request's key on (`idempotency-key` metadata, see [`crate::context::Identity`]), and
//! the post and engagement services store one post or comment per (author, key).

use std::time::Duration;

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Serialize};
use social_kit::validate;

use crate::{
    context::{AppState, Identity},
    error::ApiError,
};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The kind of key its records have in Redis ([`crate::shared::Shared`]).
const KIND: &str = "idem";
/// How long an answer is remembered.
const REMEMBERED_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long a running request holds its key: past any request's deadline, so that a
/// gateway that died mid-request locks nobody out for long.
const HELD_FOR: Duration = Duration::from_secs(120);
/// The longest answer remembered (creating routes answer a few KiB).
const MAX_ANSWER: usize = 256 * 1024;
/// What the OpenAPI document says of the header.
pub const DESCRIPTION: &str = "a key of your own (a UUID) that makes a retry of this request safe: sent again with the same request within 24 hours, it gets the first answer (Idempotent-Replayed: true) without running again; with another request, a 422; while the first still runs, a 409 with Retry-After";

/// Whether `method` `path` creates something (and so honours a key).
pub fn creates(method: &Method, path: &str) -> bool {
    // Not stream tickets: a replay would hand back a spent ticket, and asking for
    // another costs nothing.
    method == Method::POST
        && (matches!(path, "/v1/accounts" | "/v1/sessions" | "/v1/posts")
            || path
                .strip_prefix("/v1/posts/")
                .is_some_and(|rest| rest.ends_with("/comments") && rest.matches('/').count() == 1))
}

/// What Redis holds for a key.
#[derive(Serialize, Deserialize)]
struct Record {
    /// An HMAC of the method, path and body.
    fingerprint: String,
    /// The answer, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<Answer>,
}

/// A remembered answer.
#[derive(Serialize, Deserialize)]
struct Answer {
    status: u16,
    /// Its [`Sealed`] part, sealed (base64).
    sealed: String,
}

/// What an answer keeps sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// `Content-Type`, `Location`.
    headers: Vec<(String, String)>,
    /// The body (base64).
    body: String,
}

/// What the seal of an answer checks besides its content: its status and request.
fn checked(status: u16, fingerprint: &str) -> Vec<u8> {
    format!("{status}:{fingerprint}").into_bytes()
}

/// The key of a request, if it sent a valid one; a 400 naming the header otherwise.
fn key_of(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if validate::is_idempotency_key(k) => Ok(Some(k.to_owned())),
        _ => Err(ApiError::invalid("Idempotency-Key", validate::IDEMPOTENCY_KEY_RULE)),
    }
}

/// Whether an answer with `status` is remembered: the request ran to a verdict.
fn remembered(status: StatusCode) -> bool {
    status.is_success()
        || matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::CONFLICT)
}

/// The middleware (inside the rate limits, so that a replay costs what a request does).
pub async fn remember(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !creates(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let key = match key_of(&request) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(e) => return e.into_response(),
    };
    let Some(who) = request.extensions().get::<Identity>().cloned() else {
        return next.run(request).await;
    };
    let scope = match who.caller {
        Some(caller) => caller.user.to_hex(),
        // The anonymous callers' keys, for sign-up and login alone: any other creating
        // route answers 401 without a token, whatever key it came with.
        None if crate::limits::obtains_account(request.uri().path()) => String::new(),
        None => return next.run(request).await,
    };
    let (mut parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, state.settings.max_body_bytes).await else {
        return ApiError::too_large().into_response();
    };
    let shared = &state.shared;
    let name: [&[u8]; 2] = [scope.as_bytes(), key.as_bytes()];
    let fingerprint = hex::encode(shared.mac(&[
        b"fingerprint",
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &body,
    ]));
    let held = Record { fingerprint: fingerprint.clone(), answer: None };
    let held = serde_json::to_string(&held).unwrap_or_default();
    match shared.put(KIND, &name, &held, HELD_FOR, true).await {
        Ok(true) => {}
        Ok(false) => return replay(&state, &name, &fingerprint).await,
        Err(e) => return e.into_response(),
    }
    // The services store one post or comment per (author, key): the last line for a
    // retry after an answer that was lost or unknown. Bound to the request too, so that
    // a key used again after 24 hours with another request creates anew.
    let mut who = who;
    let for_services =
        shared.mac(&[b"service", scope.as_bytes(), key.as_bytes(), fingerprint.as_bytes()]);
    who.idempotency = Some(hex::encode(for_services));
    parts.extensions.insert(who);
    // Run to the end and remembered even if the client leaves meanwhile (its retry then
    // gets the answer, instead of a key held until it frees itself).
    let request = Request::from_parts(parts, Body::from(body));
    let shared = shared.clone();
    let finished = tokio::spawn(async move {
        let name: [&[u8]; 2] = [scope.as_bytes(), key.as_bytes()];
        let response = next.run(request).await;
        finish(&shared, &name, fingerprint, response).await
    });
    finished.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a request with an idempotency key failed");
        ApiError::new(tonic::Code::Internal, "internal error").into_response()
    })
}

/// Remembers `response` for the key `name` if the request ran to a verdict, else frees
/// the key; `response`, read whole.
async fn finish(
    shared: &crate::shared::Shared,
    name: &[&[u8]; 2],
    fingerprint: String,
    response: Response,
) -> Response {
    if !remembered(response.status()) {
        if let Err(e) = shared.forget(KIND, name).await {
            tracing::warn!(error = ?e, "could not free an idempotency key; it frees itself");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_ANSWER).await else {
        let _ = shared.forget(KIND, name).await;
        return ApiError::new(tonic::Code::Internal, "internal error").into_response();
    };
    let headers = [header::CONTENT_TYPE, header::LOCATION]
        .iter()
        .filter_map(|h| {
            let value = parts.headers.get(h)?.to_str().ok()?;
            Some((h.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    let sealed = Sealed { headers, body: BASE64.encode(&body) };
    let status = parts.status.as_u16();
    let plain = serde_json::to_vec(&sealed).unwrap_or_default();
    let sealed = shared.seal(name, &checked(status, &fingerprint), &plain);
    let record =
        Record { fingerprint, answer: Some(Answer { status, sealed: BASE64.encode(sealed) }) };
    let record = serde_json::to_string(&record).unwrap_or_default();
    // Not remembered (Redis failed just now): the key frees itself; the answer goes out.
    if let Err(e) = shared.put(KIND, name, &record, REMEMBERED_FOR, false).await {
        tracing::warn!(error = ?e, "could not remember an answer for its idempotency key");
    }
    Response::from_parts(parts, Body::from(body))
}

/// The answer to a request whose key is taken.
async fn replay(state: &AppState, name: &[&[u8]; 2], fingerprint: &str) -> Response {
    let busy = || {
        ApiError::in_progress(
            "a request with this Idempotency-Key is still running; retry shortly",
            Duration::from_secs(1),
        )
        .into_response()
    };
    let record = match state.shared.get(KIND, name).await {
        Ok(Some(record)) => record,
        // Freed just now: the retry runs it.
        Ok(None) => return busy(),
        Err(e) => return e.into_response(),
    };
    let Ok(record) = serde_json::from_str::<Record>(&record) else {
        return busy();
    };
    if record.fingerprint != fingerprint {
        return ApiError::unprocessable(
            "Idempotency-Key",
            "was sent before with another request; use a new key for a new request",
        )
        .into_response();
    }
    let Some(answer) = record.answer else {
        return busy();
    };
    let aad = checked(answer.status, &record.fingerprint);
    let opened = BASE64
        .decode(&answer.sealed)
        .ok()
        .and_then(|sealed| state.shared.open(name, &aad, &sealed))
        .and_then(|plain| serde_json::from_slice::<Sealed>(&plain).ok());
    let body = opened.as_ref().and_then(|o| BASE64.decode(&o.body).ok());
    let (Some(opened), Some(body), Ok(status)) =
        (opened, body, StatusCode::from_u16(answer.status))
    else {
        return busy();
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in opened.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers
        .insert(HeaderName::from_static("idempotent-replayed"), HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_creating_routes_honour_keys_and_no_others() {
        for path in [
            "/v1/accounts",
            "/v1/sessions",
            "/v1/posts",
            "/v1/posts/0123456789abcdef01234567/comments",
        ] {
            assert!(creates(&Method::POST, path), "{path}");
        }
        for (method, path) in [
            (Method::GET, "/v1/posts"),
            (Method::POST, "/v1/sessions/refresh"),
            (Method::POST, "/v1/notifications/stream-tickets"),
            (Method::POST, "/v1/notifications/read"),
            (Method::POST, "/v1/posts/x/comments/y"),
            (Method::PUT, "/v1/posts/x/like"),
        ] {
            assert!(!creates(&method, path), "{method} {path}");
        }
    }
}
