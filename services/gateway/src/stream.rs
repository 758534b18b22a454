//! The caller's notifications, live, as Server-Sent Events (`GET
//! /v1/notifications/stream`).
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
//! (clients merge by id). A client away too long (more than 1,000 missed, or a day), or
//! whose `Last-Event-ID` cannot be read, gets `event: resync` instead: reload the list,
//! then carry on with the stream; its id is a resume point at that moment. Each list page
//! a resume reads after the first is charged to the account's rate limit like a request
//! (past it, a resync).
//! Notifications removed while the client was away are not paged: when any of the
//! caller's were removed after its resume point (the notification service records when,
//! for two days), the client gets `event: resync` and its reload shows them gone.
//!
//! **A client that stops reading costs nobody else.** The service's stream is read as
//! fast as it sends, never at the client's pace: what the client has not taken waits in
//! a buffer of its catch-up plus [`LIVE_BUFFER`] events, then (a burst) in an overflow of
//! [`OVERFLOW`]; a client that falls further behind, or takes none of what waits for 10
//! s, has its stream ended (it resumes with `Last-Event-ID`). Otherwise
//! the unread data would hold the HTTP/2 window this gateway shares with every other
//! call to the notification service's pod. What a connection remembers is bounded too
//! ([`REMEMBERED`] ids, [`ACTORS`] accounts), and each account, and each address, may
//! hold only so many streams open at once (`GATEWAY_STREAMS_PER_*`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    future::Future,
    time::Duration,
};

use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{
        Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use social_proto::notification::v1::{
    ListNotificationsRequest, Notification as WireNotification, StreamNotificationsRequest,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{AppState, Identity, Query, SignedIn, accounts, ask, open_stream},
    error::{ApiResult, ErrorBody},
    model::{Account, Notification},
    notifications::{attach, sampled, with_accounts},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream)).routes(routes!(stream_ticket))
}

/// The path browsers open the stream at with a ticket.
pub const STREAM_PATH: &str = "/v1/notifications/stream";

/// A stream ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ticket {
    /// Pass it as `?ticket=` to `GET /v1/notifications/stream`, once.
    pub ticket: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
}

/// A short-lived, single-use ticket that opens the caller's live stream in place of the
/// access token: a browser's `EventSource` cannot send `Authorization`, and an access
/// token in a URL would be written into proxies' and servers' logs. Valid 30 s, for one
/// stream (every replica knows it); the stream it opens lasts as the access token it
/// was issued with. When the stream ends, ask for a new ticket and open a new
/// `EventSource` with `last_event_id` set to the last event's id (the browser's own
/// reconnect reuses the spent ticket, and is refused).
#[utoipa::path(post, path = "/v1/notifications/stream-tickets", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 201, body = Ticket), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stream_ticket(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
) -> ApiResult<Response> {
    use axum::response::IntoResponse;
    // A caller has its token (identified by it).
    let token = who.token.as_deref().unwrap_or_default();
    let ticket = state.shared.issue_ticket(token).await?;
    let body = Ticket { ticket, expires_in: crate::shared::TICKET_TTL.as_secs() };
    Ok((axum::http::StatusCode::CREATED, Json(body)).into_response())
}

/// Live events a stream's buffer holds for a client that is slow to take them, beyond
/// its catch-up.
pub const LIVE_BUFFER: usize = 64;
/// Live events held behind a full buffer (a burst): a client this far behind has
/// stopped reading, and its stream ends.
pub const OVERFLOW: usize = 192;
/// How long a client may take none of the events waiting for it before its stream ends.
const PATIENCE: Duration = Duration::from_secs(10);
/// Ids a connection remembers having sent, so that a re-push of one is not sent again
/// (older ones may come again: clients merge by id).
pub const REMEMBERED: usize = 1000;
/// Actors' accounts a connection keeps (it looks up others again).
pub const ACTORS: usize = 200;

/// The accounts of those who acted, as the caller may see them.
pub trait Actors: Send + Sync {
    fn look_up(
        &self,
        ids: Vec<String>,
    ) -> impl Future<Output = ApiResult<HashMap<String, Account>>> + Send;
}

/// Looks accounts up through the user service, as the caller.
struct AsCaller {
    state: AppState,
    who: Identity,
}

impl Actors for AsCaller {
    fn look_up(
        &self,
        ids: Vec<String>,
    ) -> impl Future<Output = ApiResult<HashMap<String, Account>>> + Send {
        accounts(&self.state.services, &self.who, ids)
    }
}

/// Why a stream's forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The client went away.
    ClientGone,
    /// The client left [`LIVE_BUFFER`] live events untaken.
    FellBehind,
    /// The service's stream ended (the token expired, the service moved).
    Upstream,
}

/// What the client was last told of a notification.
#[derive(Debug, Clone, Copy)]
struct Told {
    version: i64,
    removed: bool,
}

/// What the client was told of the last `cap` notification ids it heard of.
struct Remembered {
    order: VecDeque<String>,
    told: HashMap<String, Told>,
    cap: usize,
}

impl Remembered {
    fn new(cap: usize) -> Self {
        Self { order: VecDeque::new(), told: HashMap::new(), cap: cap.max(1) }
    }

    /// Whether to tell the client of notification `id` at `version` (`removed`: its
    /// removal), which it then remembers: not a push of one it has (again) or whose
    /// newer removal it was told of (a push that lost a race with an unlike), nor a
    /// removal it was told of already or older than the notification it has.
    fn tell(&mut self, id: &str, version: i64, removed: bool) -> bool {
        if let Some(told) = self.told.get_mut(id) {
            let stale = if removed {
                told.removed || told.version > version
            } else {
                !told.removed || told.version >= version
            };
            if stale {
                return false;
            }
            *told = Told { version, removed };
            return true;
        }
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.told.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.told.insert(id.to_owned(), Told { version, removed });
        true
    }

    /// Records that the client has notification `id`, at a version it did not say (its
    /// resume point): a push of it is not sent again, any removal is.
    fn has(&mut self, id: &str) {
        self.tell(id, i64::MIN, false);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.told.len()
    }
}

/// What a stream's buffer must hold: its whole catch-up (at most [`RESUME_MAX`], or one
/// `resync`) and [`LIVE_BUFFER`] live events.
fn room(missed: Option<&Vec<Notification>>) -> usize {
    missed.map_or(1, Vec::len) + LIVE_BUFFER
}

/// What one connection keeps while it forwards.
struct Forwarding<'a, A> {
    actors: &'a A,
    tx: &'a mpsc::Sender<Event>,
    sent: Sent,
    /// What the client has: a re-push of one of these is not sent again.
    delivered: Remembered,
    accounts: HashMap<String, Account>,
    /// Events the full buffer could not take yet (a burst), oldest first.
    overflow: VecDeque<Event>,
    /// Since when the client has taken nothing while events wait in `overflow`.
    stuck_since: Option<Instant>,
}

impl<A: Actors> Forwarding<'_, A> {
    /// Queues `event` for the client, never waiting for it: into the buffer, or behind
    /// it (at most [`OVERFLOW`] events) while the buffer is full.
    fn send(&mut self, event: Event) -> Result<(), Ended> {
        if self.overflow.is_empty() {
            match self.tx.try_send(event) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Ended::ClientGone),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.stuck_since = Some(Instant::now());
                    self.overflow.push_back(event);
                    return Ok(());
                }
            }
        }
        if self.overflow.len() >= OVERFLOW {
            return Err(Ended::FellBehind);
        }
        self.overflow.push_back(event);
        Ok(())
    }

    /// Moves the oldest waiting event into the buffer, which has room for it.
    fn take_one(&mut self, room: mpsc::Permit<'_, Event>) {
        if let Some(event) = self.overflow.pop_front() {
            room.send(event);
        }
        self.stuck_since = (!self.overflow.is_empty()).then(Instant::now);
    }

    /// The accounts of `ids` not known yet, looked up (a failed look-up leaves them out).
    async fn learn(&mut self, ids: impl IntoIterator<Item = String>) {
        let unknown: Vec<String> =
            ids.into_iter().filter(|id| !self.accounts.contains_key(id)).collect();
        if unknown.is_empty() {
            return;
        }
        if let Ok(found) = self.actors.look_up(unknown).await {
            if self.accounts.len() + found.len() > ACTORS {
                self.accounts.clear();
            }
            self.accounts.extend(found);
        }
    }

    async fn live(&mut self, mut n: WireNotification) -> Result<(), Ended> {
        if let Some(group) = n.group.take() {
            self.learn(group.sample_account_ids.iter().cloned()).await;
            if let Ok(e) = Event::default().event("group").json_data(sampled(group, &self.accounts))
            {
                self.send(e)?;
            }
            return Ok(());
        }
        if !n.removals.is_empty() {
            // Many at once (a deleted post's): one event, whatever their number.
            let items: Vec<serde_json::Value> = n
                .removals
                .iter()
                .filter(|r| self.delivered.tell(&r.id, r.version, true))
                .map(|r| serde_json::json!({ "id": r.id, "group_key": r.group_key, "version": r.version }))
                .collect();
            if items.is_empty() {
                return Ok(());
            }
            let body = serde_json::json!({ "items": items });
            if let Ok(e) = Event::default().event("removals").json_data(body) {
                self.send(e)?;
            }
            return Ok(());
        }
        if !self.delivered.tell(&n.id, n.version, n.removed) {
            return Ok(()); // in the pages already, or removed since
        }
        if n.removed {
            if let Some(e) = event(&mut self.sent, Notification::from(n), true) {
                self.send(e)?;
            }
            return Ok(());
        }
        self.learn([n.source_user_id.clone()]).await;
        let n = attach(vec![n], &self.accounts).into_iter().next();
        if let Some(e) = n.and_then(|n| event(&mut self.sent, n, false)) {
            self.send(e)?;
        }
        Ok(())
    }
}

/// Sends the missed notifications (or a resync), then the live ones, each id once,
/// into `tx`, which must hold all of `missed` plus [`LIVE_BUFFER`]; never waits for the
/// client to take them: the service's stream is read on while the client is slow, and
/// the client has fallen behind (the forwarding ends) when [`OVERFLOW`] events wait
/// behind the full buffer, or when it has taken none of them for `patience`.
async fn forward<A, S>(
    actors: &A,
    point: Option<Sent>,
    missed: Option<Vec<Notification>>,
    mut live: S,
    tx: &mpsc::Sender<Event>,
    patience: Duration,
) -> Ended
where
    A: Actors,
    S: Stream<Item = Result<WireNotification, Status>> + Unpin,
{
    let sent = point.unwrap_or_default();
    let mut delivered = Remembered::new(REMEMBERED);
    for id in sent.ids() {
        delivered.has(&id);
    }
    let mut f = Forwarding {
        actors,
        tx,
        sent,
        delivered,
        accounts: HashMap::new(),
        overflow: VecDeque::new(),
        stuck_since: None,
    };
    let caught_up = match missed {
        Some(missed) => missed.into_iter().try_for_each(|n| {
            f.delivered.tell(&n.id, n.version, false);
            match event(&mut f.sent, n, false) {
                Some(e) => f.send(e),
                None => Ok(()),
            }
        }),
        // Its id is a resume point at this moment: the client reloads its list now, so
        // a reconnect after this resumes from here, not from the point it had.
        None => {
            let now_ms = bson::DateTime::now().timestamp_millis();
            f.sent.newest_ms = now_ms;
            f.send(Event::default().event("resync").id(format!("resync.{now_ms}.")).data("{}"))
        }
    };
    if let Err(ended) = caught_up {
        return ended;
    }
    loop {
        let waiting = !f.overflow.is_empty();
        let give_up = f.stuck_since.unwrap_or_else(Instant::now) + patience;
        tokio::select! {
            next = live.next() => match next {
                Some(Ok(n)) => {
                    if let Err(ended) = f.live(n).await {
                        return ended;
                    }
                }
                _ => return Ended::Upstream,
            },
            room = tx.reserve(), if waiting => match room {
                Ok(room) => f.take_one(room),
                Err(_) => return Ended::ClientGone,
            },
            () = tokio::time::sleep_until(give_up), if waiting => return Ended::FellBehind,
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
        self.recent.retain(|(other, ms)| *ms >= floor && other != id);
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
    n.created_at.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// One SSE event for a notification (or its removal).
fn event(sent: &mut Sent, n: Notification, removed: bool) -> Option<Event> {
    if removed {
        let body =
            serde_json::json!({ "id": n.id, "group_key": n.group_key, "version": n.version });
        return Event::default().event("removed").json_data(body).ok();
    }
    let ms = bson::DateTime::parse_rfc3339_str(&n.created_at)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default();
    let id = sent.record(&n.id, ms);
    Event::default().event("notification").id(id).json_data(&n).ok()
}

/// Options of the live stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Also send `event: group` whenever one of the caller's notification groups changes.
    #[serde(default)]
    pub groups: bool,
    /// A stream ticket (`POST /v1/notifications/stream-tickets`) in place of the access
    /// token, for browsers. (Redeemed by `limits::identify`, before this handler.)
    #[param(pattern = "^[0-9a-f]{64}$")]
    #[allow(dead_code)]
    pub ticket: Option<String>,
    /// The id of the last event received, for clients that cannot send the
    /// `Last-Event-ID` header (a new `EventSource`); the header wins when both are sent.
    pub last_event_id: Option<String>,
}

/// The caller's notifications, live, as Server-Sent Events: `event: notification` with
/// the notification (and who acted) as data, `event: removed` (`id`, `group_key`,
/// `version`) when one is removed (its post or comment was deleted, the like or follow
/// taken back), `event: removals` (`items`, each `id`, `group_key` and `version`) when
/// several are removed at once (a deleted post's, a deleted account's), and a comment
/// line every 15 s to keep proxies from closing it. With `groups=true`, also
/// `event: group` with a notification group's new summary (count, unread count, recent
/// actors) whenever it changes, so that a grouped view stays live; group events carry
/// no id: after reconnecting, reload the first page of groups. Reconnecting with
/// `Last-Event-ID` sends the notifications missed first, with no gap and no duplicate
/// (see the module docs). The stream ends when the service's does (the access token
/// expired, the service moved), and when the client has stopped reading (256 events
/// waiting, or none taken for 10 s): reconnect. An account may hold 5 streams open at
/// once, an address 1,000 (429 beyond; close one).
#[utoipa::path(get, path = "/v1/notifications/stream", tag = "notifications",
    params(("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received"),
        StreamQuery),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "the live notifications"),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    SignedIn(who, caller): SignedIn,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    use axum::response::IntoResponse;
    // Held as long as the response's body: until the connection lets go of it.
    let slot = state.limits.open_stream(caller.user, who.ip)?;
    let peer = state.services.notifications.clone();
    // The live feed first, so that nothing falls between it and the pages.
    let request = who.request(&peer, StreamNotificationsRequest { include_groups: q.groups });
    // A stream outlives an RPC's deadline; it ends with its token.
    let mut notifications = crate::context::clients::notifications(&peer);
    let live =
        open_stream(&peer, "opening the stream", request, Duration::from_secs(24 * 3600), |r| {
            notifications.stream_notifications(r)
        })
        .await?;
    let now_ms = bson::DateTime::now().timestamp_millis();
    // A resume point that cannot be read says the client had something: it resyncs.
    let last = match headers.get("last-event-id") {
        Some(last) => Some(last.to_str().ok()),
        None => q.last_event_id.as_deref().map(Some),
    };
    let (point, missed) = match last {
        None => (None, Some(Vec::new())),
        Some(last) => match last.and_then(|l| Sent::parse(l, now_ms)) {
            Some(point) => {
                let missed = missed_since(&state, &who, &point, now_ms).await?;
                (Some(point), missed)
            }
            None => (None, None),
        },
    };
    let (tx, rx) = mpsc::channel::<Event>(room(missed.as_ref()));
    let shutdown = state.shutdown.clone();
    let actors = AsCaller { state, who };
    tokio::spawn(async move {
        // Ends when the client goes (even while nothing arrives), or when the service's
        // stream ends (token expiry, a replica that lost its feed): closing ours makes
        // the client reconnect with its Last-Event-ID.
        tokio::select! {
            ended = forward(&actors, point, missed, live, &tx, PATIENCE) => if ended == Ended::FellBehind {
                tracing::info!(
                    behind = LIVE_BUFFER + OVERFLOW,
                    "a stream's client stopped taking its events; ended it (it resumes with Last-Event-ID)"
                );
            },
            () = tx.closed() => {}
            // This replica stops: the client reconnects (to another) with its
            // Last-Event-ID and misses nothing.
            () = shutdown.cancelled() => {}
        }
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |e| {
        let _ = &slot;
        Ok::<_, Infallible>(e)
    });
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
    let floor = point.newest_ms.saturating_sub(RESUME_WINDOW_MS);
    let known = point.ids();
    let (mut missed, mut token) = (Vec::new(), String::new());
    for page in 0..RESUME_PAGES {
        // The request paid for the first page (and its accounts); each further one is
        // charged to the account like a request of its own: past its rate, a resync.
        if page > 0 && !state.limits.charge_account(who) {
            return Ok(None);
        }
        let request = ListNotificationsRequest {
            page_size: 100,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = ask!(state, who, notifications.list_notifications(request))?;
        // Something was removed after the client's point: it may still show it, and
        // removals are not paged: it reloads.
        let removed_ms = page
            .last_removal_at
            .as_ref()
            .map_or(0, |t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000);
        if removed_ms > point.newest_ms {
            return Ok(None);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Every actor has an account named after its id.
    struct Everyone;

    impl Actors for Everyone {
        fn look_up(
            &self,
            ids: Vec<String>,
        ) -> impl Future<Output = ApiResult<HashMap<String, Account>>> + Send {
            let found = ids
                .into_iter()
                .map(|id| {
                    let account = Account {
                        id: id.clone(),
                        username: id.clone(),
                        full_name: String::new(),
                        profile_picture_url: String::new(),
                    };
                    (id, account)
                })
                .collect();
            async move { Ok(found) }
        }
    }

    fn wire(i: usize, actor: usize) -> WireNotification {
        WireNotification {
            id: format!("n{i}"),
            source_user_id: format!("u{actor}"),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000 + i as i64,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    /// `n` live notifications (counting those the forwarder has taken), then nothing
    /// for ever: the service's stream stays open. Their ids are not those of a
    /// catch-up's.
    fn live(
        n: usize,
        taken: Arc<AtomicUsize>,
    ) -> impl Stream<Item = Result<WireNotification, Status>> + Unpin {
        futures::stream::iter((0..n).map(|i| Ok(wire(100_000 + i, i))))
            .inspect(move |_| {
                taken.fetch_add(1, Ordering::Relaxed);
            })
            .chain(futures::stream::pending())
            .boxed()
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_left_behind_while_the_service_is_read_on() {
        let (tx, rx) = mpsc::channel(room(Some(&Vec::new())));
        let taken = Arc::new(AtomicUsize::new(0));
        let forwarding = forward(
            &Everyone,
            None,
            Some(Vec::new()),
            live(1000, taken.clone()),
            &tx,
            Duration::from_secs(60),
        );
        // The client never reads `rx`.
        let ended = tokio::time::timeout(Duration::from_secs(5), forwarding)
            .await
            .expect("forwarding waited for a client that does not read");
        assert_eq!(ended, Ended::FellBehind);
        assert_eq!(rx.len(), LIVE_BUFFER, "what it could hold was kept for it");
        assert_eq!(
            taken.load(Ordering::Relaxed),
            LIVE_BUFFER + OVERFLOW + 1,
            "the service's stream was read past the client's pace"
        );
    }

    #[tokio::test]
    async fn a_burst_beyond_the_buffer_reaches_a_client_that_reads_it_late() {
        let (tx, mut rx) = mpsc::channel(room(Some(&Vec::new())));
        let burst = LIVE_BUFFER + OVERFLOW;
        let taken = Arc::new(AtomicUsize::new(0));
        let forwarding = forward(
            &Everyone,
            None,
            Some(Vec::new()),
            live(burst, taken),
            &tx,
            Duration::from_secs(5),
        );
        let reader = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = Vec::new();
            while got.len() < burst {
                got.push(rx.recv().await.unwrap());
            }
            got
        };
        tokio::select! {
            ended = forwarding => panic!("the stream ended: {ended:?}"),
            got = tokio::time::timeout(Duration::from_secs(5), reader) => {
                let got = got.expect("the whole burst within 5 s");
                let last = format!("{:?}", got[burst - 1]);
                assert!(last.contains(&format!("n{}.", 100_000 + burst - 1)), "in order: {last}");
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_for_its_patience_is_left_behind() {
        let (tx, _rx) = mpsc::channel(room(Some(&Vec::new())));
        let taken = Arc::new(AtomicUsize::new(0));
        // Fewer than the buffer and the overflow hold: only the wait ends it.
        let forwarding = forward(
            &Everyone,
            None,
            Some(Vec::new()),
            live(LIVE_BUFFER + 10, taken.clone()),
            &tx,
            Duration::from_millis(300),
        );
        let ended = tokio::time::timeout(Duration::from_secs(5), forwarding).await;
        assert_eq!(ended, Ok(Ended::FellBehind));
        assert_eq!(taken.load(Ordering::Relaxed), LIVE_BUFFER + 10);
    }

    #[tokio::test]
    async fn a_catch_up_longer_than_the_live_buffer_is_sent_whole() {
        let missed: Vec<Notification> =
            (0..RESUME_MAX).map(|i| Notification::from(wire(i, 1))).collect();
        let (tx, mut rx) = mpsc::channel(room(Some(&missed)));
        let taken = Arc::new(AtomicUsize::new(0));
        let forwarding = forward(
            &Everyone,
            None,
            Some(missed),
            live(LIVE_BUFFER, taken),
            &tx,
            Duration::from_secs(60),
        );
        // Nothing read until the live ones are in: all of it waits for the client.
        let still = tokio::time::timeout(Duration::from_millis(500), forwarding).await;
        assert!(still.is_err(), "still forwarding: {still:?}");
        assert_eq!(rx.len(), RESUME_MAX + LIVE_BUFFER);
        let first = rx.recv().await.unwrap();
        assert!(format!("{first:?}").contains("n0."), "oldest first: {first:?}");
    }

    /// A connection's forwarding into `tx`, before anything was sent.
    fn forwarding(tx: &mpsc::Sender<Event>) -> Forwarding<'_, Everyone> {
        Forwarding {
            actors: &Everyone,
            tx,
            sent: Sent::default(),
            delivered: Remembered::new(REMEMBERED),
            accounts: HashMap::new(),
            overflow: VecDeque::new(),
            stuck_since: None,
        }
    }

    #[tokio::test]
    async fn what_a_connection_remembers_is_bounded() {
        let (tx, mut rx) = mpsc::channel(room(None));
        let mut f = forwarding(&tx);
        for i in 0..5 * REMEMBERED {
            f.live(wire(i, i)).await.unwrap();
            assert!(rx.recv().await.is_some());
            assert!(f.delivered.len() <= REMEMBERED);
            assert!(f.accounts.len() <= ACTORS);
        }
        // A re-push of a recent one is not sent again; one long forgotten is.
        f.live(wire(5 * REMEMBERED - 1, 1)).await.unwrap();
        assert!(rx.try_recv().is_err(), "a recent one again");
        f.live(wire(0, 1)).await.unwrap();
        assert!(rx.try_recv().is_ok(), "a forgotten one goes out again");
    }

    /// The issue's race: a like's push reaches the gateway after the removal an unlike
    /// sent meanwhile (another replica handled it).
    #[tokio::test]
    async fn a_push_that_lost_its_race_with_a_removal_is_not_sent() {
        let (tx, mut rx) = mpsc::channel(room(None));
        let mut f = forwarding(&tx);
        let version = |mut n: WireNotification, v: i64| {
            n.version = v;
            n
        };
        let removal = |n: &WireNotification, v: i64| WireNotification {
            id: n.id.clone(),
            removed: true,
            version: v,
            ..Default::default()
        };
        let (like, other) = (version(wire(1, 1), 11), version(wire(2, 2), 13));
        f.live(removal(&like, 20)).await.unwrap();
        f.live(like.clone()).await.unwrap();
        f.live(removal(&like, 20)).await.unwrap();
        f.live(other.clone()).await.unwrap();
        let told: Vec<String> =
            std::iter::from_fn(|| rx.try_recv().ok()).map(|e| format!("{e:?}")).collect();
        assert_eq!(told.len(), 2, "the stale push or a repeated removal was sent: {told:#?}");
        assert!(told[0].contains("removed") && told[0].contains("\\\"n1\\\""), "{told:#?}");
        assert!(told[1].contains("notification") && told[1].contains("n2"), "{told:#?}");

        // The removal of one the client has goes out, also inside `removals`; a stale
        // removal (older than the notification it has) does not.
        f.live(removal(&other, 12)).await.unwrap();
        assert!(rx.try_recv().is_err(), "a removal older than what the client has");
        let many = WireNotification {
            removals: vec![removal(&other, 14), removal(&like, 20)],
            ..Default::default()
        };
        f.live(many).await.unwrap();
        let told = format!("{:?}", rx.try_recv().expect("the removals"));
        assert!(told.contains("n2") && !told.contains("n1"), "{told}");
    }
}
