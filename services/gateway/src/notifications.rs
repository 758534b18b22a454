//! The caller's notifications (the notification service): lists with each actor's
//! account, and read state. The live stream is in `stream`.

use std::collections::HashMap;

use axum::{Json, extract::State, response::Response};
use serde::Deserialize;
use social_proto::notification::v1::{
    GetUnreadCountRequest, GetUnreadGroupCountRequest, ListNotificationGroupsRequest,
    ListNotificationsRequest, MarkAllNotificationsReadRequest, MarkGroupReadRequest,
    MarkNotificationsReadRequest, Notification as WireNotification, NotificationGroup as WireGroup,
    NotificationType,
};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{AppState, Body, Identity, Listing, PageQuery, Path, Query, SignedIn, accounts, ask},
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
        .routes(routes!(groups))
        .routes(routes!(unread_group_count))
        .routes(routes!(mark_group_read))
}

/// `unread_only` and `types` of the list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
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
                            "{:?} is not one of FOLLOW, POST_LIKE, COMMENT_LIKE, POST_COMMENT, MENTION",
                            social_kit::validate::quoted(t)
                        ),
                    )
                })
        })
        .collect()
}

/// `notifications` with their actors' accounts (one call for them all).
pub(crate) async fn with_accounts(
    state: &AppState,
    who: &Identity,
    wire: Vec<WireNotification>,
) -> ApiResult<Vec<Notification>> {
    let actors =
        accounts(&state.services, who, wire.iter().map(|n| n.source_user_id.clone())).await?;
    Ok(attach(wire, &actors))
}

pub(crate) fn attach(
    wire: Vec<WireNotification>,
    actors: &HashMap<String, Account>,
) -> Vec<Notification> {
    wire.into_iter()
        .map(|n| {
            let account = actors.get(&n.source_user_id).cloned();
            Notification { account, ..Notification::from(n) }
        })
        .collect()
}

/// The caller's notifications, newest first, each with who acted.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(PageQuery, ListFilter),
    security(("bearer" = [])),
    responses((status = 200, body = NotificationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
    Query(q): Query<ListFilter>,
) -> ApiResult<Response> {
    let request = ListNotificationsRequest {
        unread_only: q.unread_only,
        types: types(&q.types)?,
        ..list.request()
    };
    let r = ask!(state, who, notifications.list_notifications(request))?;
    let items = with_accounts(&state, &who, r.notifications).await?;
    Ok(list.answer(NotificationPage::of(items, r.next_page_token)))
}

/// `unread_only` of the grouped list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupFilter {
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
        wire.iter().flat_map(|g| g.sample_account_ids.iter().cloned()),
    )
    .await?;
    Ok(wire.into_iter().map(|g| sampled(g, &actors)).collect())
}

pub(crate) fn sampled(g: WireGroup, actors: &HashMap<String, Account>) -> NotificationGroup {
    let sample_accounts =
        g.sample_account_ids.iter().filter_map(|id| actors.get(id).cloned()).collect();
    NotificationGroup { sample_accounts, ..NotificationGroup::from(g) }
}

/// The caller's notifications in groups, most recent activity first ("alice and 12
/// others liked your post"): likes of one post, likes of one comment, and follows that
/// fall in one window of time (a day by default) share a group; a comment or a mention
/// is a group of one, so this list alone shows everything. A group with new activity
/// moves to the top. Each group carries up to five recent actors' accounts.
#[utoipa::path(get, path = "/v1/notification-groups", tag = "notifications", params(PageQuery, GroupFilter),
    security(("bearer" = [])),
    responses((status = 200, body = NotificationGroupPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn groups(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
    Query(q): Query<GroupFilter>,
) -> ApiResult<Response> {
    let request = ListNotificationGroupsRequest { unread_only: q.unread_only, ..list.request() };
    let r = ask!(state, who, notifications.list_notification_groups(request))?;
    let items = with_samples(&state, &who, r.groups).await?;
    Ok(list.answer(NotificationGroupPage::of(items, r.next_page_token)))
}

/// How many of the caller's notification groups have unread notifications, at most
/// 1,000.
#[utoipa::path(get, path = "/v1/notification-groups/unread-count", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Count), (status = 401, body = ErrorBody)))]
async fn unread_group_count(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
) -> ApiResult<Json<Count>> {
    let r = ask!(state, who, notifications.get_unread_group_count(GetUnreadGroupCountRequest {}))?;
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
    SignedIn(who, _): SignedIn,
    Path(group_key): Path<String>,
) -> ApiResult<Json<Updated>> {
    let request = MarkGroupReadRequest { group_key };
    let r = ask!(state, who, notifications.mark_group_read(request))?;
    Ok(Json(Updated { updated_count: r.updated_count }))
}

/// How many of the caller's notifications are unread, at most 1,000 (more reads as
/// 1,000: show "999+").
#[utoipa::path(get, path = "/v1/notifications/unread-count", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Count), (status = 401, body = ErrorBody)))]
async fn unread_count(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
) -> ApiResult<Json<Count>> {
    let r = ask!(state, who, notifications.get_unread_count(GetUnreadCountRequest {}))?;
    Ok(Json(Count { count: r.count }))
}

/// Marks some of the caller's notifications read (others' ids change nothing).
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications",
    request_body = MarkRead, security(("bearer" = [])),
    responses((status = 200, body = Updated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Body(body): Body<MarkRead>,
) -> ApiResult<Json<Updated>> {
    let request = MarkNotificationsReadRequest { ids: body.ids };
    let r = ask!(state, who, notifications.mark_notifications_read(request))?;
    Ok(Json(Updated { updated_count: r.updated_count }))
}

/// Marks all of the caller's notifications read.
#[utoipa::path(post, path = "/v1/notifications/read-all", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Updated), (status = 401, body = ErrorBody)))]
async fn mark_all_read(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
) -> ApiResult<Json<Updated>> {
    let request = MarkAllNotificationsReadRequest {};
    let r = ask!(state, who, notifications.mark_all_notifications_read(request))?;
    Ok(Json(Updated { updated_count: r.updated_count }))
}
