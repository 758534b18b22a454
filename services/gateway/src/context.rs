//! What every handler works with: the services (through the kit's peer client:
//! deadline, trace context, error mapping), who is calling (client address and
//! verified account), request bodies that answer in the error shape, pages, and the
//! one-batch hydration of accounts.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use axum::{
    extract::{FromRequest, FromRequestParts, OriginalUri, Request, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, de::DeserializeOwned};
use social_kit::{auth::Caller, client::Peer};
use social_proto::user::v1::BatchGetUsersRequest;
use tonic::Code;
use utoipa::IntoParams;

use crate::{
    error::{ApiError, ApiResult},
    model::Account,
};

/// Calls a service as the caller: `ask!(state, who, posts.get_post(message))` sends
/// `message` to the post service's `GetPost` with the caller's token and address
/// ([`Identity::request`]), under the peer's deadline ([`Peer::call`]); a failure becomes
/// the API's answer for that service ([`ApiError::upstream`]). The one way a handler
/// calls a service.
macro_rules! ask {
    ($state:expr, $who:expr, $peer:ident . $rpc:ident ($message:expr)) => {{
        let peer = &$state.services.$peer;
        peer.call($crate::context::clients::$peer(peer).$rpc($who.request(peer, $message)))
            .await
            .map_err(|s| $crate::error::ApiError::upstream(peer, s))
    }};
}
pub(crate) use ask;

/// The generated client of each service, by its field in [`Services`].
pub mod clients {
    use social_kit::client::Peer;
    use social_proto::{
        engagement::v1::engagement_service_client::EngagementServiceClient,
        graph::v1::social_graph_service_client::SocialGraphServiceClient,
        notification::v1::notification_service_client::NotificationServiceClient,
        post::v1::post_service_client::PostServiceClient,
        user::v1::user_service_client::UserServiceClient,
    };
    use tonic::transport::Channel;

    pub fn users(peer: &Peer) -> UserServiceClient<Channel> {
        UserServiceClient::new(peer.channel())
    }

    pub fn posts(peer: &Peer) -> PostServiceClient<Channel> {
        PostServiceClient::new(peer.channel())
    }

    pub fn graph(peer: &Peer) -> SocialGraphServiceClient<Channel> {
        SocialGraphServiceClient::new(peer.channel())
    }

    pub fn engagement(peer: &Peer) -> EngagementServiceClient<Channel> {
        EngagementServiceClient::new(peer.channel())
    }

    pub fn notifications(peer: &Peer) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(peer.channel())
    }
}

/// The services behind the gateway. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub users: Peer,
    pub posts: Peer,
    pub graph: Peer,
    pub engagement: Peer,
    pub notifications: Peer,
}

/// Shared by every handler: what [`Gateway`] holds, behind one reference count, since
/// the router and each middleware clone it for every request (five peers' channels,
/// cloned field by field, cost more than the rest of a cached read's routing).
#[derive(Clone)]
pub struct AppState(Arc<Gateway>);

impl AppState {
    pub fn new(gateway: Gateway) -> Self {
        Self(Arc::new(gateway))
    }
}

impl std::ops::Deref for AppState {
    type Target = Gateway;

    fn deref(&self) -> &Gateway {
        &self.0
    }
}

/// What the gateway's handlers work with.
pub struct Gateway {
    pub services: Services,
    pub limits: Arc<crate::limits::Limits>,
    pub settings: Arc<crate::Settings>,
    /// Cancelled at shutdown: live streams end (their clients reconnect elsewhere).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// What every replica sees alike (Redis).
    pub shared: crate::shared::Shared,
}

/// Who is calling: the client's address and, with a valid bearer token, the account.
/// Set by the first middleware; a bad token is 401 before anything else.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ip: IpAddr,
    pub caller: Option<Caller>,
    /// The bearer token as sent, passed on to the services.
    pub token: Option<String>,
    /// The request's `Idempotency-Key`, as the services see it (`idempotency-key`
    /// metadata: one post or comment per author and key), on the routes that take one.
    pub idempotency: Option<String>,
}

impl Identity {
    /// The caller's account, or 401.
    pub fn account(&self) -> ApiResult<Caller> {
        self.caller.ok_or_else(|| {
            ApiError::new(
                Code::Unauthenticated,
                "this call needs an access token (Authorization: Bearer <token>)",
            )
        })
    }

    /// `message` for `peer`, carrying the caller's token.
    pub fn request<T>(&self, peer: &Peer, message: T) -> tonic::Request<T> {
        let mut request = peer.request(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(key) = &self.idempotency
            && let Ok(value) = key.parse()
        {
            request.metadata_mut().insert(social_kit::validate::IDEMPOTENCY_KEY, value);
        }
        // Believed by the services with the gateway's credential the peer presents.
        if let Ok(value) = self.ip.to_string().parse() {
            request.metadata_mut().insert(social_kit::serve::CLIENT_ADDRESS_HEADER, value);
        }
        request
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| ApiError::new(Code::Internal, "internal error"))
    }
}

/// A request from a signed-in account: its [`Identity`] and the account. Without a
/// token the request is a 401 before the handler runs, so a handler that needs an
/// account says so in its signature (`SignedIn(who, me)`, or `SignedIn(who, _)` when
/// the services read the account from the token) instead of remembering a check.
pub struct SignedIn(pub Identity, pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let who = Identity::from_request_parts(parts, state).await?;
        let me = who.account()?;
        Ok(Self(who, me))
    }
}

/// A list request: the page asked for (`page_size`, `page_token` in the query string)
/// and the address the answer's `Link` header builds the next page's on.
pub struct Listing {
    page: PageQuery,
    uri: axum::http::Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Listing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(page) = Query::<PageQuery>::from_request_parts(parts, state).await?;
        let Ok(OriginalUri(uri)) = OriginalUri::from_request_parts(parts, state).await;
        Ok(Self { page, uri })
    }
}

impl Listing {
    /// The list request of the page asked for, its other fields left to the handler:
    /// `ListFollowersRequest { user_id, ..list.request() }`.
    pub fn request<R: social_proto::OfPage>(&mut self) -> R {
        let token = std::mem::take(&mut self.page.page_token);
        R::of_page(self.page.page_size, token)
    }

    /// `page` as JSON, with the `Link` header to the page after it.
    pub fn answer<P: Page>(&self, page: P) -> Response {
        paged(&self.uri, page)
    }
}

/// A JSON request body: an object. A malformed one, one of another type (serde would read
/// a struct from an array of its fields in order too: `[]` would pass for a body of
/// defaults) or one with an unknown field is a 400 in the error shape naming the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(value))) => Ok(Self(value)),
            Err(rejection) => Err(body_error(&rejection)),
        }
    }
}

/// `T` read from a JSON object alone.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        json.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

/// A body's list of objects, read from a JSON array of objects alone (see [`Body`]):
/// `#[serde(default, deserialize_with = "objects")]`.
pub fn objects<'de, D, T>(json: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    let list = <Vec<Object<T>> as serde::Deserialize>::deserialize(json)?;
    Ok(list.into_iter().map(|Object(item)| item).collect())
}

/// [`objects`] of an optional list: `#[serde(default, deserialize_with = "some_objects")]`.
pub fn some_objects<'de, D, T>(json: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    let list = <Option<Vec<Object<T>>> as serde::Deserialize>::deserialize(json)?;
    Ok(list.map(|l| l.into_iter().map(|Object(item)| item).collect()))
}

/// One of a body's words (a string enum), read from a JSON string alone: serde would read
/// a word from `{"word": null}` too. `#[serde(deserialize_with = "word")]`.
pub fn word<'de, D, T>(json: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    let word = <String as serde::Deserialize>::deserialize(json)?;
    T::deserialize(serde::de::value::StringDeserializer::<D::Error>::new(word))
}

/// A parser's complaint as an answer repeats it: its first 200 characters (it may quote
/// what was sent).
fn complaint(text: &str) -> String {
    social_kit::validate::cut(text, 200)
}

fn body_error(rejection: &JsonRejection) -> ApiError {
    let text = complaint(&rejection.body_text());
    // serde names an unknown field as "unknown field `name`".
    if let Some(start) = text.find("unknown field `") {
        let rest = &text[start + "unknown field `".len()..];
        if let Some(end) = rest.find('`') {
            let field = social_kit::validate::quoted(&rest[..end]);
            return ApiError::invalid(&field, "is not a field of this request");
        }
    }
    if let Some(start) = text.find("missing field `") {
        let rest = &text[start + "missing field `".len()..];
        if let Some(end) = rest.find('`') {
            return ApiError::invalid(&rest[..end], "is required");
        }
    }
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large();
    }
    // Where in the body serde stopped, when not at its top: "…target type: media[0]: why".
    if let JsonRejection::JsonDataError(_) = rejection
        && let Some((_, rest)) = text.split_once("target type: ")
        && let Some((path, why)) = rest.split_once(": ")
        && !path.is_empty()
        && path.chars().all(|c| c.is_ascii_alphanumeric() || "_[].".contains(c))
    {
        return ApiError::invalid(path, why);
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("body", "must be JSON (Content-Type: application/json)")
        }
        _ => ApiError::invalid("body", text),
    }
}

/// `page_size` and `page_token` of a list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page: 20 when absent, at most 100.
    #[serde(default)]
    #[param(minimum = 0)]
    pub page_size: i32,
    /// `next_page_token` of the previous page.
    #[serde(default)]
    pub page_token: String,
}

/// A query string that answers in the error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid("query", complaint(&rejection.body_text()))),
        }
    }
}

/// A path parameter that answers in the error shape (a path that does not decode, such
/// as `%FF`, is a 400 naming `id`).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid("id", complaint(&rejection.body_text()))),
        }
    }
}

/// A page of a list: its items and where the next page starts.
pub trait Page: serde::Serialize {
    /// Empty on the last page.
    fn next_page_token(&self) -> &str;
}

/// A page as JSON with its `Link: <...>; rel="next"` header ([`Listing::answer`]).
fn paged<P: Page>(uri: &axum::http::Uri, page: P) -> Response {
    let next_token = page.next_page_token().to_owned();
    let mut response = axum::Json(page).into_response();
    if !next_token.is_empty() {
        // The request's own parameters, decoded as the handler read them (`+` a space,
        // `%5F` an underscore), but its page token: the next page's replaces it.
        let asked = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes());
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(asked.filter(|(k, _)| k != "page_token"))
            .append_pair("page_token", &next_token)
            .finish();
        let link = format!("<{}?{query}>; rel=\"next\"", uri.path());
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

/// A `201 Created` with `Location`.
pub fn created<T: serde::Serialize>(location: String, body: T) -> Response {
    let mut response = (axum::http::StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// How long opening a peer's server-streaming call may take (the call's own deadline is
/// the stream's whole life).
const OPEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the server-streaming call `request` of `peer` made with `open`: it may run for
/// `life`, and must start within [`OPEN_WITHIN`] (`what` names it in the error).
pub async fn open_stream<M, T, F>(
    peer: &Peer,
    what: &str,
    mut request: tonic::Request<M>,
    life: std::time::Duration,
    open: impl FnOnce(tonic::Request<M>) -> F,
) -> ApiResult<tonic::Streaming<T>>
where
    F: Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    request.set_timeout(life);
    tokio::time::timeout(OPEN_WITHIN, open(request))
        .await
        .map_err(|_| ApiError::upstream(peer, tonic::Status::deadline_exceeded(what)))?
        .map(tonic::Response::into_inner)
        .map_err(|s| ApiError::upstream(peer, s))
}

/// The accounts of `ids`, in one call to the user service (missing ones are absent).
pub async fn accounts(
    services: &Services,
    identity: &Identity,
    ids: impl IntoIterator<Item = String>,
) -> ApiResult<HashMap<String, Account>> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<String> =
        ids.into_iter().filter(|id| !id.is_empty() && seen.insert(id.clone())).collect();
    let peer = &services.users;
    let mut client = clients::users(peer);
    let mut found = HashMap::with_capacity(unique.len());
    // A page has at most 100 items, so one call; a stream's resume may need a few.
    for ids in unique.chunks(social_kit::validate::MAX_BATCH) {
        let request = BatchGetUsersRequest { ids: ids.to_vec() };
        let users = peer
            .call(client.batch_get_users(identity.request(peer, request)))
            .await
            .map_err(|s| ApiError::upstream(peer, s))?
            .users;
        found.extend(users.iter().map(|u| (u.id.clone(), Account::from(u))));
    }
    Ok(found)
}

/// The `Authorization: Bearer` token of `headers`, if any (`Err` if malformed).
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::new(Code::Unauthenticated, "the Authorization header is not text")
    })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthenticated,
                "the Authorization header must be `Bearer <access token>`",
            )
        })?;
    Ok(Some(token.to_owned()))
}
