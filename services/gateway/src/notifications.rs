//! The caller's notifications (the notification service): lists with each actor's
//! account, read state, and the live stream as Server-Sent Events.
//!
//! **Resuming the stream.** Each SSE event's `id` starts with the notification's id,
//! followed by the newest `created_at` (ms) the connection has sent and the ids of the
//! other notifications it sent that were created within 60 s of that: the
//! `Last-Event-ID` a client sends back on reconnecting therefore says exactly what it
//! has of the window the resume rule of docs/events.md pages through. The gateway opens
//! the service's stream first, then pages the list from the top down to 60 s before
//! that newest one, sends what the client lacks (oldest first), then the live ones,
//! each id once: no gap, no duplicate. The resume point holds the ids of at most 50
//! notifications per minute: beyond that, some of the minute before may come again
//! (clients merge by id). A client away too long (more than 1,000 missed, or a day) gets
//! `event: resync` instead: reload the list, then carry on with the stream.
//! Notifications removed while the client was away are not announced: its reload or
//! next list shows them gone.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    time::Duration,
};

use axum::{
    Json,
    extract::{OriginalUri, State},
    http::HeaderMap,
    response::{
        Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::StreamExt;
use serde::Deserialize;
use social_proto::notification::v1::{
    GetUnreadCountRequest, GetUnreadGroupCountRequest, ListNotificationGroupsRequest,
    ListNotificationsRequest, MarkAllNotificationsReadRequest, MarkGroupReadRequest,
    MarkNotificationsReadRequest, Notification as WireNotification, NotificationGroup as WireGroup,
    NotificationType, StreamNotificationsRequest,
    notification_service_client::NotificationServiceClient,
};
use tonic::transport::Channel;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{AppState, Body, Identity, Path, Query, accounts, paged},
    error::{ApiError, ApiResult, ErrorBody},
    model::{
        Account, Count, MarkRead, Notification, NotificationGroup, NotificationGroupPage,
        NotificationPage, Updated,
    },
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(unread_count))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
        .routes(routes!(stream))
        .routes(routes!(groups))
        .routes(routes!(unread_group_count))
        .routes(routes!(mark_group_read))
}

fn client(state: &AppState) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(state.services.notifications.channel())
}

macro_rules! call {
    ($state:expr, $call:expr) => {
        $state
            .services
            .notifications
            .call($call)
            .await
            .map_err(|s| ApiError::upstream(&$state.services.notifications, s))
    };
}

/// `page_size`, `page_token`, `unread_only` and `types` of the list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page: 20 when absent, at most 100.
    #[serde(default)]
    #[param(minimum = 0)]
    pub page_size: i32,
    /// `next_page_token` of the previous page.
    #[serde(default)]
    pub page_token: String,
    /// Only unread ones.
    #[serde(default)]
    pub unread_only: bool,
    /// Only these types, comma-separated (`FOLLOW,MENTION`); all when absent.
    #[serde(default)]
    pub types: String,
}

/// The wire numbers of `types` (`FOLLOW,MENTION`), naming a bad one.
fn types(list: &str) -> ApiResult<Vec<i32>> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            NotificationType::from_str_name(&t.to_ascii_uppercase())
                .filter(|t| *t != NotificationType::Unspecified)
                .map(|t| t as i32)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "types",
                        format!(
                            "{t:?} is not one of FOLLOW, POST_LIKE, COMMENT_LIKE, POST_COMMENT, MENTION"
                        ),
                    )
                })
        })
        .collect()
}

/// `notifications` with their actors' accounts (one call for them all).
async fn with_accounts(
    state: &AppState,
    who: &Identity,
    wire: Vec<WireNotification>,
) -> ApiResult<Vec<Notification>> {
    let actors = accounts(
        &state.services,
        who,
        wire.iter().map(|n| n.source_user_id.clone()),
    )
    .await?;
    Ok(attach(wire, &actors))
}

fn attach(wire: Vec<WireNotification>, actors: &HashMap<String, Account>) -> Vec<Notification> {
    wire.into_iter()
        .map(|n| {
            let account = actors.get(&n.source_user_id).cloned();
            Notification {
                account,
                ..Notification::from(n)
            }
        })
        .collect()
}

/// The caller's notifications, newest first, each with who acted.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = NotificationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    who: Identity,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    who.account()?;
    let request = ListNotificationsRequest {
        page_size: q.page_size,
        page_token: q.page_token,
        unread_only: q.unread_only,
        types: types(&q.types)?,
    };
    let peer = &state.services.notifications;
    let r = call!(
        state,
        client(&state).list_notifications(who.request(peer, request))
    )?;
    let items = with_accounts(&state, &who, r.notifications).await?;
    Ok(paged(
        &uri,
        NotificationPage {
            items,
            next_page_token: r.next_page_token,
        },
    ))
}

/// `page_size`, `page_token` and `unread_only` of the grouped list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupQuery {
    /// Groups per page: 20 when absent, at most 100.
    #[serde(default)]
    #[param(minimum = 0)]
    pub page_size: i32,
    /// `next_page_token` of the previous page.
    #[serde(default)]
    pub page_token: String,
    /// Only groups with unread notifications.
    #[serde(default)]
    pub unread_only: bool,
}

/// `groups` with their sample actors' accounts (one call for a whole page).
async fn with_samples(
    state: &AppState,
    who: &Identity,
    wire: Vec<WireGroup>,
) -> ApiResult<Vec<NotificationGroup>> {
    let actors = accounts(
        &state.services,
        who,
        wire.iter()
            .flat_map(|g| g.sample_account_ids.iter().cloned()),
    )
    .await?;
    Ok(wire.into_iter().map(|g| sampled(g, &actors)).collect())
}

fn sampled(g: WireGroup, actors: &HashMap<String, Account>) -> NotificationGroup {
    let sample_accounts = g
        .sample_account_ids
        .iter()
        .filter_map(|id| actors.get(id).cloned())
        .collect();
    NotificationGroup {
        sample_accounts,
        ..NotificationGroup::from(g)
    }
}

/// The caller's notifications in groups, most recent activity first ("alice and 12
/// others liked your post"): likes of one post, likes of one comment, and follows that
/// fall in one window of time (a day by default) share a group; a comment or a mention
/// is a group of one, so this list alone shows everything. A group with new activity
/// moves to the top. Each group carries up to five recent actors' accounts.
#[utoipa::path(get, path = "/v1/notification-groups", tag = "notifications", params(GroupQuery),
    security(("bearer" = [])),
    responses((status = 200, body = NotificationGroupPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn groups(
    State(state): State<AppState>,
    who: Identity,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<GroupQuery>,
) -> ApiResult<Response> {
    who.account()?;
    let request = ListNotificationGroupsRequest {
        page_size: q.page_size,
        page_token: q.page_token,
        unread_only: q.unread_only,
    };
    let peer = &state.services.notifications;
    let r = call!(
        state,
        client(&state).list_notification_groups(who.request(peer, request))
    )?;
    let items = with_samples(&state, &who, r.groups).await?;
    Ok(paged(
        &uri,
        NotificationGroupPage {
            items,
            next_page_token: r.next_page_token,
        },
    ))
}

/// How many of the caller's notification groups have unread notifications.
#[utoipa::path(get, path = "/v1/notification-groups/unread-count", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Count), (status = 401, body = ErrorBody)))]
async fn unread_group_count(
    State(state): State<AppState>,
    who: Identity,
) -> ApiResult<Json<Count>> {
    who.account()?;
    let peer = &state.services.notifications;
    let r = call!(
        state,
        client(&state).get_unread_group_count(who.request(peer, GetUnreadGroupCountRequest {}))
    )?;
    Ok(Json(Count { count: r.count }))
}

/// Marks every notification of one of the caller's groups read, those stored in it
/// meanwhile too (both unread counts move); 404 for a key that is not one of the
/// caller's groups.
#[utoipa::path(post, path = "/v1/notification-groups/{group_key}/read", tag = "notifications",
    params(("group_key" = String, Path, max_length = 200)),
    security(("bearer" = [])),
    responses((status = 200, body = Updated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn mark_group_read(
    State(state): State<AppState>,
    who: Identity,
    Path(group_key): Path<String>,
) -> ApiResult<Json<Updated>> {
    who.account()?;
    let peer = &state.services.notifications;
    let request = MarkGroupReadRequest { group_key };
    let r = call!(
        state,
        client(&state).mark_group_read(who.request(peer, request))
    )?;
    Ok(Json(Updated {
        updated_count: r.updated_count,
    }))
}

/// How many of the caller's notifications are unread.
#[utoipa::path(get, path = "/v1/notifications/unread-count", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Count), (status = 401, body = ErrorBody)))]
async fn unread_count(State(state): State<AppState>, who: Identity) -> ApiResult<Json<Count>> {
    who.account()?;
    let peer = &state.services.notifications;
    let r = call!(
        state,
        client(&state).get_unread_count(who.request(peer, GetUnreadCountRequest {}))
    )?;
    Ok(Json(Count { count: r.count }))
}

/// Marks some of the caller's notifications read (others' ids change nothing).
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications",
    request_body = MarkRead, security(("bearer" = [])),
    responses((status = 200, body = Updated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    who: Identity,
    Body(body): Body<MarkRead>,
) -> ApiResult<Json<Updated>> {
    who.account()?;
    let peer = &state.services.notifications;
    let request = MarkNotificationsReadRequest { ids: body.ids };
    let r = call!(
        state,
        client(&state).mark_notifications_read(who.request(peer, request))
    )?;
    Ok(Json(Updated {
        updated_count: r.updated_count,
    }))
}

/// Marks all of the caller's notifications read.
#[utoipa::path(post, path = "/v1/notifications/read-all", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Updated), (status = 401, body = ErrorBody)))]
async fn mark_all_read(State(state): State<AppState>, who: Identity) -> ApiResult<Json<Updated>> {
    who.account()?;
    let peer = &state.services.notifications;
    let request = MarkAllNotificationsReadRequest {};
    let r = call!(
        state,
        client(&state).mark_all_notifications_read(who.request(peer, request))
    )?;
    Ok(Json(Updated {
        updated_count: r.updated_count,
    }))
}

/// How long opening the service's stream may take.
const OPEN_WITHIN: Duration = Duration::from_secs(5);

/// Sends the missed notifications (or a resync), then the live ones, each id once.
async fn forward(
    state: AppState,
    who: Identity,
    point: Option<Sent>,
    missed: Option<Vec<Notification>>,
    mut live: tonic::Streaming<WireNotification>,
    tx: &tokio::sync::mpsc::Sender<Event>,
) {
    let mut sent = point.unwrap_or_default();
    // What the client has: a re-push of one of these is not sent again.
    let mut delivered = sent.ids();
    let mut actors: HashMap<String, Account> = HashMap::new();
    match missed {
        Some(missed) => {
            for n in missed {
                delivered.insert(n.id.clone());
                if let Some(e) = event(&mut sent, n, false)
                    && tx.send(e).await.is_err()
                {
                    return;
                }
            }
        }
        None => {
            let resync = Event::default().event("resync").data("{}");
            if tx.send(resync).await.is_err() {
                return;
            }
        }
    }
    while let Some(Ok(mut n)) = live.next().await {
        if let Some(group) = n.group.take() {
            let unknown: Vec<String> = group
                .sample_account_ids
                .iter()
                .filter(|id| !actors.contains_key(*id))
                .cloned()
                .collect();
            if !unknown.is_empty()
                && let Ok(found) = accounts(&state.services, &who, unknown).await
            {
                actors.extend(found);
            }
            let update = Event::default()
                .event("group")
                .json_data(sampled(group, &actors));
            if let Ok(e) = update
                && tx.send(e).await.is_err()
            {
                return;
            }
            continue;
        }
        if n.removed {
            let id = n.id.clone();
            if let Some(e) = event(&mut sent, Notification::from(n), true)
                && tx.send(e).await.is_err()
            {
                return;
            }
            delivered.remove(&id);
            continue;
        }
        if !delivered.insert(n.id.clone()) {
            continue; // in the pages already
        }
        if !actors.contains_key(&n.source_user_id)
            && let Ok(found) = accounts(&state.services, &who, [n.source_user_id.clone()]).await
        {
            actors.extend(found);
        }
        let n = attach(vec![n], &actors).into_iter().next();
        if let Some(e) = n.and_then(|n| event(&mut sent, n, false))
            && tx.send(e).await.is_err()
        {
            return;
        }
    }
}

/// How far back a resume pages (docs/events.md: notifications are pushed within 30 s
/// of their `created_at`).
const RESUME_WINDOW_MS: i64 = 60_000;
/// Most notifications a resume sends before the live ones.
const RESUME_MAX: usize = 1000;
/// Most ids a resume point carries (and is read).
const RESUME_IDS: usize = 50;
/// Most list pages a resume reads before it gives up and asks for a resync.
const RESUME_PAGES: usize = RESUME_MAX / 100 + 1;
/// A resume point older than this is not paged back to: the client resyncs.
const RESUME_HORIZON_MS: i64 = 24 * 3600 * 1000;

/// What a connection has sent, as its SSE ids say.
#[derive(Default)]
struct Sent {
    newest_ms: i64,
    /// Ids sent, with their `created_at` (ms), within the window of `newest_ms`.
    recent: Vec<(String, i64)>,
}

impl Sent {
    /// Parses a `Last-Event-ID` (see the module docs): at most [`RESUME_IDS`] ids, and
    /// a time no later than `now_ms` (a client's clock, or a forged one, cannot move the
    /// window past what exists).
    fn parse(last: &str, now_ms: i64) -> Option<Self> {
        let mut parts = last.splitn(3, '.');
        let last_id = parts.next()?.to_owned();
        let newest_ms = parts.next()?.parse::<i64>().ok()?.min(now_ms);
        let mut recent = vec![(last_id, newest_ms)];
        if let Some(others) = parts.next() {
            recent.extend(
                others
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .take(RESUME_IDS)
                    .map(|id| (id.to_owned(), newest_ms)),
            );
        }
        Some(Self { newest_ms, recent })
    }

    /// The ids of the resume point.
    fn ids(&self) -> HashSet<String> {
        self.recent.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Records `id` sent; the SSE id that says so.
    fn record(&mut self, id: &str, created_ms: i64) -> String {
        self.newest_ms = self.newest_ms.max(created_ms);
        let floor = self.newest_ms - RESUME_WINDOW_MS;
        self.recent
            .retain(|(other, ms)| *ms >= floor && other != id);
        self.recent.push((id.to_owned(), created_ms));
        if self.recent.len() > RESUME_IDS {
            let excess = self.recent.len() - RESUME_IDS;
            self.recent.drain(..excess);
        }
        let others: Vec<&str> = self
            .recent
            .iter()
            .filter(|(other, _)| other != id)
            .map(|(other, _)| other.as_str())
            .collect();
        format!("{id}.{}.{}", self.newest_ms, others.join(","))
    }
}

fn created_ms(n: &WireNotification) -> i64 {
    n.created_at
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// One SSE event for a notification (or its removal).
fn event(sent: &mut Sent, n: Notification, removed: bool) -> Option<Event> {
    if removed {
        let body = serde_json::json!({ "id": n.id, "group_key": n.group_key });
        return Event::default().event("removed").json_data(body).ok();
    }
    let ms = bson::DateTime::parse_rfc3339_str(&n.created_at)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default();
    let id = sent.record(&n.id, ms);
    Event::default()
        .event("notification")
        .id(id)
        .json_data(&n)
        .ok()
}

/// Options of the live stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Also send `event: group` whenever one of the caller's notification groups changes.
    #[serde(default)]
    pub groups: bool,
}

/// The caller's notifications, live, as Server-Sent Events: `event: notification` with
/// the notification (and who acted) as data, `event: removed` (`id`, `group_key`) when
/// one is removed (its post or comment was deleted, the like or follow taken back), and
/// a comment line every 15 s to keep proxies from closing it. With `groups=true`, also
/// `event: group` with a notification group's new summary (count, unread count, recent
/// actors) whenever it changes, so that a grouped view stays live; group events carry
/// no id: after reconnecting, reload the first page of groups. Reconnecting with
/// `Last-Event-ID` sends the notifications missed first, with no gap and no duplicate
/// (see the module docs). The stream ends when the service's does (the access token
/// expired, the service moved): reconnect.
#[utoipa::path(get, path = "/v1/notifications/stream", tag = "notifications",
    params(("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received"),
        StreamQuery),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "the live notifications"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    who: Identity,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    use axum::response::IntoResponse;
    who.account()?;
    let peer = state.services.notifications.clone();
    // The live feed first, so that nothing falls between it and the pages.
    let mut request = who.request(
        &peer,
        StreamNotificationsRequest {
            include_groups: q.groups,
        },
    );
    // A stream outlives an RPC's deadline; it ends with its token.
    request.set_timeout(Duration::from_secs(24 * 3600));
    // Opening it is bounded like any call (the deadline above is the stream's life).
    let opened = tokio::time::timeout(OPEN_WITHIN, client(&state).stream_notifications(request))
        .await
        .map_err(|_| {
            ApiError::upstream(
                &peer,
                tonic::Status::deadline_exceeded("opening the stream"),
            )
        })?;
    let live = opened
        .map_err(|s| ApiError::upstream(&peer, s))?
        .into_inner();
    let now_ms = bson::DateTime::now().timestamp_millis();
    let point = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|last| Sent::parse(last, now_ms));
    let missed = match &point {
        Some(point) => missed_since(&state, &who, point, now_ms).await?,
        None => Some(Vec::new()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        // Ends when the client goes (even while nothing arrives), or when the service's
        // stream ends (token expiry, a replica that lost its feed): closing ours makes
        // the client reconnect with its Last-Event-ID.
        tokio::select! {
            () = forward(state, who, point, missed, live, &tx) => {}
            () = tx.closed() => {}
            // This replica stops: the client reconnects (to another) with its
            // Last-Event-ID and misses nothing.
            () = shutdown.cancelled() => {}
        }
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What the client lacks of the window before its resume point, oldest first, or `None`
/// when that cannot be told within bounds (the client must resync).
async fn missed_since(
    state: &AppState,
    who: &Identity,
    point: &Sent,
    now_ms: i64,
) -> ApiResult<Option<Vec<Notification>>> {
    if point.newest_ms < now_ms.saturating_sub(RESUME_HORIZON_MS) {
        return Ok(None);
    }
    let peer = &state.services.notifications;
    let floor = point.newest_ms.saturating_sub(RESUME_WINDOW_MS);
    let known = point.ids();
    let (mut missed, mut token) = (Vec::new(), String::new());
    for _ in 0..RESUME_PAGES {
        let request = ListNotificationsRequest {
            page_size: 100,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = call!(
            state,
            client(state).list_notifications(who.request(peer, request))
        )?;
        for n in page.notifications {
            if created_ms(&n) < floor {
                missed.reverse();
                return with_accounts(state, who, missed).await.map(Some);
            }
            if !known.contains(&n.id) {
                if missed.len() >= RESUME_MAX {
                    return Ok(None);
                }
                missed.push(n);
            }
        }
        if page.next_page_token.is_empty() {
            missed.reverse();
            return with_accounts(state, who, missed).await.map(Some);
        }
        token = page.next_page_token;
    }
    Ok(None)
}
