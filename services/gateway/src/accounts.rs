//! Accounts, profiles and sessions (the user service).

use axum::{Json, extract::State, http::StatusCode, response::Response};
use prost_types::FieldMask;
use social_proto::user::v1::{
    ChangePasswordRequest, DeleteAccountRequest, ExportAccountRequest, ExportRecord,
    GetUserByUsernameRequest, GetUserRequest, ListSessionsRequest, LoginRequest, LogoutRequest,
    RefreshSessionRequest, RegisterRequest, RevokeOtherSessionsRequest, RevokeSessionRequest,
    UpdateUserRequest, User as WireUser,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{AppState, Body, Identity, Listing, PageQuery, Path, SignedIn, ask, created},
    error::{ApiError, ApiResult, ErrorBody},
    model::{
        Confirm, LogIn, PasswordChange, ProfileChange, Refresh, Session, SessionPage, SignUp,
        Tokens, Updated, User,
    },
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(log_in, list_sessions))
        .routes(routes!(refresh))
        .routes(routes!(log_out))
        .routes(routes!(revoke_session))
        .routes(routes!(revoke_other_sessions))
        .routes(routes!(get_user))
        .routes(routes!(get_user_by_username))
        .routes(routes!(me, change_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(export_me))
}

/// Signs up: the account, and the tokens of its first session.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = SignUp,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = crate::idempotency::DESCRIPTION)),
    responses((status = 201, body = Tokens, description = "the account and its tokens"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "username or email taken, or the Idempotency-Key's first request still runs"),
        (status = 422, body = ErrorBody, description = "the Idempotency-Key was sent with another request"),
        (status = 429, body = ErrorBody)))]
async fn sign_up(
    State(state): State<AppState>,
    who: Identity,
    Body(body): Body<SignUp>,
) -> ApiResult<Response> {
    let request = RegisterRequest {
        username: body.username,
        email: body.email,
        password: body.password,
        full_name: body.full_name,
        device: body.device,
    };
    let r = ask!(state, who, users.register(request))?;
    let user: Option<User> = r.user.map(Into::into);
    let location = format!("/v1/users/{}", user.as_ref().map_or("", |u| u.id.as_str()));
    let tokens = Tokens {
        access_token: r.access_token,
        expires_at: crate::model::time(r.expires_at),
        refresh_token: r.refresh_token,
        refresh_expires_at: crate::model::time(r.refresh_expires_at),
        session_id: r.session_id,
        user,
    };
    Ok(created(location, tokens))
}

/// Logs in: a new session and its tokens.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = LogIn,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = crate::idempotency::DESCRIPTION)),
    responses((status = 201, body = Tokens), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "wrong username, email or password"),
        (status = 409, body = ErrorBody, description = "the Idempotency-Key's first request still runs"),
        (status = 422, body = ErrorBody, description = "the Idempotency-Key was sent with another request"),
        (status = 429, body = ErrorBody, description = "too many failed logins: see Retry-After")))]
async fn log_in(
    State(state): State<AppState>,
    who: Identity,
    Body(body): Body<LogIn>,
) -> ApiResult<Response> {
    let request = LoginRequest {
        username_or_email: body.username_or_email,
        password: body.password,
        device: body.device,
    };
    let r = ask!(state, who, users.login(request))?;
    let tokens = Tokens {
        access_token: r.access_token,
        expires_at: crate::model::time(r.expires_at),
        refresh_token: r.refresh_token,
        refresh_expires_at: crate::model::time(r.refresh_expires_at),
        session_id: r.session_id,
        user: r.user.map(Into::into),
    };
    // No Location: a session has no resource of its own to GET (it is listed at
    // `/v1/sessions` and ended at `/v1/sessions/{id}`).
    Ok(axum::response::IntoResponse::into_response((StatusCode::CREATED, Json(tokens))))
}

/// Exchanges a refresh token for new tokens (the old one stops working; using it again
/// ends the session).
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "sessions", request_body = Refresh,
    responses((status = 200, body = Tokens), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    who: Identity,
    Body(body): Body<Refresh>,
) -> ApiResult<Json<Tokens>> {
    let request = RefreshSessionRequest { refresh_token: body.refresh_token };
    let r = ask!(state, who, users.refresh_session(request))?;
    Ok(Json(Tokens {
        access_token: r.access_token,
        expires_at: crate::model::time(r.expires_at),
        refresh_token: r.refresh_token,
        refresh_expires_at: crate::model::time(r.refresh_expires_at),
        session_id: r.session_id,
        user: None,
    }))
}

/// Logs out: ends the current session.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions",
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn log_out(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
) -> ApiResult<StatusCode> {
    ask!(state, who, users.logout(LogoutRequest {}))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's sessions, newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SessionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
) -> ApiResult<Response> {
    let request: ListSessionsRequest = list.request();
    let r = ask!(state, who, users.list_sessions(request))?;
    let items: Vec<Session> = r.sessions.into_iter().map(Into::into).collect();
    Ok(list.answer(SessionPage::of(items, r.next_page_token)))
}

/// Ends one of the caller's sessions.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "a session id")), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_session(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = RevokeSessionRequest { session_id: id };
    ask!(state, who, users.revoke_session(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller but the current one.
#[utoipa::path(post, path = "/v1/sessions/revoke-others", tag = "sessions",
    security(("bearer" = [])),
    responses((status = 200, body = Updated), (status = 401, body = ErrorBody)))]
async fn revoke_other_sessions(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
) -> ApiResult<Json<Updated>> {
    let request = RevokeOtherSessionsRequest {};
    let r = ask!(state, who, users.revoke_other_sessions(request))?;
    Ok(Json(Updated { updated_count: r.revoked_count }))
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "a user id")),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    let u = ask!(state, who, users.get_user(GetUserRequest { id }))?;
    Ok(Json(u.into()))
}

/// One user by username, case-insensitively.
#[utoipa::path(get, path = "/v1/users/by-username/{username}", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_user_by_username(
    State(state): State<AppState>,
    who: Identity,
    Path(username): Path<String>,
) -> ApiResult<Json<User>> {
    let request = GetUserByUsernameRequest { username };
    let u = ask!(state, who, users.get_user_by_username(request))?;
    Ok(Json(u.into()))
}

/// The caller's own profile (with the email).
#[utoipa::path(get, path = "/v1/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn me(State(state): State<AppState>, SignedIn(who, me): SignedIn) -> ApiResult<Json<User>> {
    let request = GetUserRequest { id: me.user.to_hex() };
    let u = ask!(state, who, users.get_user(request))?;
    Ok(Json(u.into()))
}

/// How long an export may run (it reads everything of the account).
const EXPORT_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);

/// One record of an export as a line of JSON: `{"profile": ...}` and the like.
fn export_line(record: ExportRecord) -> Option<axum::body::Bytes> {
    use social_proto::user::v1::export_record::Record;
    let value = match record.record? {
        Record::Profile(u) => serde_json::json!({ "profile": User::from(u) }),
        Record::Post(p) => serde_json::json!({ "post": crate::model::Post::from(p) }),
        Record::Like(l) => serde_json::json!({ "like": crate::model::Like::from(l) }),
        Record::Comment(c) => serde_json::json!({ "comment": crate::model::Comment::from(c) }),
        Record::Follow(f) => serde_json::json!({ "follow": crate::model::Follow::from(f) }),
    };
    let mut line = serde_json::to_vec(&value).ok()?;
    line.push(b'\n');
    Some(line.into())
}

/// Everything of the caller's account, to take away (data portability): newline-delimited
/// JSON, one record per line, streamed as the user service reads it: `{"profile": ...}`
/// first (with the email), then every `{"post": ...}`, `{"like": ...}`,
/// `{"comment": ...}` and `{"follow": ...}` (both ways), each in the shape the other
/// routes answer. A transfer that breaks off (it ends without its last chunk) is to be
/// asked again.
#[utoipa::path(get, path = "/v1/me/export", tag = "users", security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-ndjson", description = "one record per line"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn export_me(
    State(state): State<AppState>,
    SignedIn(who, me): SignedIn,
) -> ApiResult<Response> {
    use futures::StreamExt;
    // Held as long as the export streams.
    let slot = state.limits.start_export(me.user)?;
    let peer = &state.services.users;
    let request = who.request(peer, ExportAccountRequest {});
    let mut users = crate::context::clients::users(peer);
    let opened =
        crate::context::open_stream(peer, "starting the export", request, EXPORT_WITHIN, |r| {
            users.export_account(r)
        })
        .await?;
    let lines = opened
        .map(move |record| {
            let _held = &slot;
            record
        })
        .filter_map(|record| async move {
            match record {
                Ok(record) => export_line(record).map(Ok),
                Err(status) => {
                    tracing::warn!(%status, "an export broke off");
                    Some(Err(std::io::Error::other(status.message().to_owned())))
                }
            }
        })
        .boxed();
    // Read from the user service at its pace, not the client's: a client that stops
    // reading lets go of the export (and of the window it holds on the connection every
    // call to the user service shares) after `PATIENCE`.
    let late = Err(std::io::Error::other("the export was not read in time"));
    let patience = social_kit::export::PATIENCE;
    let lines = social_kit::export::within(lines, EXPORT_WITHIN, patience, late);
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .map_err(|_| ApiError::new(tonic::Code::Internal, "internal error"))
}

/// Changes the caller's profile: the fields present.
#[utoipa::path(patch, path = "/v1/me", tag = "users", request_body = ProfileChange,
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn change_me(
    State(state): State<AppState>,
    SignedIn(who, me): SignedIn,
    Body(body): Body<ProfileChange>,
) -> ApiResult<Json<User>> {
    let mut paths = Vec::new();
    let mut user = WireUser { id: me.user.to_hex(), ..Default::default() };
    if let Some(v) = body.full_name {
        user.full_name = v;
        paths.push("full_name".to_owned());
    }
    if let Some(v) = body.bio {
        user.bio = v;
        paths.push("bio".to_owned());
    }
    if let Some(v) = body.profile_picture_url {
        user.profile_picture_url = v;
        paths.push("profile_picture_url".to_owned());
    }
    if paths.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "give at least one of full_name, bio, profile_picture_url",
        ));
    }
    let request = UpdateUserRequest { user: Some(user), update_mask: Some(FieldMask { paths }) };
    let u = ask!(state, who, users.update_user(request))?;
    Ok(Json(u.into()))
}

/// Changes the caller's password (every other session ends).
#[utoipa::path(put, path = "/v1/me/password", tag = "users", request_body = PasswordChange,
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Body(body): Body<PasswordChange>,
) -> ApiResult<StatusCode> {
    let request =
        ChangePasswordRequest { old_password: body.old_password, new_password: body.new_password };
    ask!(state, who, users.change_password(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the caller's account (the password confirms it).
#[utoipa::path(delete, path = "/v1/me", tag = "users", request_body = Confirm,
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn delete_me(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Body(body): Body<Confirm>,
) -> ApiResult<StatusCode> {
    let request = DeleteAccountRequest { password: body.password };
    ask!(state, who, users.delete_account(request))?;
    Ok(StatusCode::NO_CONTENT)
}
