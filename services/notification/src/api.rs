//! `social.notification.v1.NotificationService`: the caller's own notifications only,
//! by token.

use bson::oid::ObjectId;
use futures::{StreamExt, stream::BoxStream};
use social_kit::{
    Result,
    auth::{caller, session},
    error::Violations,
    paging::PageRequest,
    time::to_timestamp,
    validate,
};
use social_proto::notification::v1::{
    GetUnreadCountRequest, GetUnreadCountResponse, GetUnreadGroupCountRequest,
    ListNotificationGroupsRequest, ListNotificationGroupsResponse, ListNotificationsRequest,
    ListNotificationsResponse, MarkAllNotificationsReadRequest, MarkGroupReadRequest,
    MarkNotificationsReadRequest, MarkNotificationsReadResponse, Notification, NotificationGroup,
    NotificationType, StreamNotificationsRequest, notification_service_server::NotificationService,
};
use tonic::{Request, Response, Status};

use crate::{
    groups::GroupDoc,
    hub::Hub,
    store::{ListFilter, NotificationDoc, Store, Which},
};

pub struct Api {
    store: Store,
    hub: Hub,
    /// The sessions that ended (the gate's): a stream opened by one is cut.
    revocations: social_kit::auth::Revocations,
}

impl Api {
    pub fn new(store: Store, hub: Hub, revocations: social_kit::auth::Revocations) -> Self {
        Self { store, hub, revocations }
    }
}

/// How often an open stream looks whether its session ended.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Returns once `session` is among the ended ones (never for a token without one).
async fn ended(revocations: social_kit::auth::Revocations, session: Option<bson::oid::ObjectId>) {
    let Some(session) = session else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(SESSION_CHECK);
    loop {
        tick.tick().await;
        if revocations.is_revoked(session) {
            return;
        }
    }
}

impl From<NotificationDoc> for Notification {
    fn from(n: NotificationDoc) -> Self {
        let kind =
            NotificationType::from_str_name(&n.kind).unwrap_or(NotificationType::Unspecified);
        Self {
            version: n.version(),
            id: n.id.to_hex(),
            user_id: n.user_id.to_hex(),
            r#type: kind as i32,
            source_user_id: n.source_user_id.to_hex(),
            post_id: n.post_id.map(|p| p.to_hex()),
            comment_id: n.comment_id.map(|c| c.to_hex()),
            is_read: n.is_read,
            created_at: Some(to_timestamp(n.created_at)),
            removed: false,
            group_key: n.group_key,
            group: None,
            removals: Vec::new(),
        }
    }
}

impl From<GroupDoc> for NotificationGroup {
    fn from(g: GroupDoc) -> Self {
        let kind =
            NotificationType::from_str_name(&g.kind).unwrap_or(NotificationType::Unspecified);
        Self {
            group_key: g.group_key,
            r#type: kind as i32,
            post_id: g.post_id.map(|p| p.to_hex()),
            comment_id: g.comment_id.map(|c| c.to_hex()),
            notifications_count: g.count.max(0),
            unread_count: g.unread.clamp(0, g.count.max(0)),
            sample_account_ids: g.actors.iter().map(|a| a.to_hex()).collect(),
            most_recent_notification_id: g.latest_id.map(|i| i.to_hex()).unwrap_or_default(),
            latest_at: Some(to_timestamp(g.latest_at)),
            user_id: g.user_id.to_hex(),
            // Both only grow, and every change bumps one.
            version: g.head_version.saturating_add(g.counter_version),
        }
    }
}

/// Most types one filter names (there are five; a client may repeat one).
const MAX_TYPES: usize = 16;

/// The stored names of the requested types, naming each bad one (of more than
/// [`MAX_TYPES`], none is looked at: the count is refused).
fn types(requested: &[i32], v: &mut Violations) -> Vec<&'static str> {
    let mut out = Vec::new();
    if requested.len() > MAX_TYPES {
        v.add("types", format!("must name at most {MAX_TYPES} types"));
        return out;
    }
    for (i, t) in requested.iter().enumerate() {
        match NotificationType::try_from(*t) {
            Ok(NotificationType::Unspecified) | Err(_) => {
                v.add(
                    format!("types[{i}]"),
                    "must be FOLLOW, POST_LIKE, COMMENT_LIKE, POST_COMMENT or MENTION",
                );
            }
            Ok(kind) => {
                let name = kind.as_str_name();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out.sort_unstable();
    out
}

#[tonic::async_trait]
impl NotificationService for Api {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let mut v = Violations::default();
        let filter = ListFilter { unread_only: r.unread_only, types: types(&r.types, &mut v) };
        let query = format!("notifications:{me}:{}:{}", r.unread_only, filter.types.join(","));
        let page = PageRequest::parse(r, query, &mut v);
        v.finish()?;
        let last_removal_at = if r.page_token.is_empty() {
            self.store.last_removal(me).await?.map(to_timestamp)
        } else {
            None
        };
        let docs = self.store.list(me, &filter, &page).await?;
        let (notifications, next_page_token) = page.finish_into(docs, |n| n.sort_key);
        Ok(Response::new(ListNotificationsResponse {
            notifications,
            next_page_token,
            last_removal_at,
        }))
    }

    async fn get_unread_count(
        &self,
        request: Request<GetUnreadCountRequest>,
    ) -> Result<Response<GetUnreadCountResponse>, Status> {
        let me = caller(&request)?;
        let count = self.store.unread_count(me).await?;
        Ok(Response::new(GetUnreadCountResponse { count }))
    }

    async fn mark_notifications_read(
        &self,
        request: Request<MarkNotificationsReadRequest>,
    ) -> Result<Response<MarkNotificationsReadResponse>, Status> {
        let me = caller(&request)?;
        let mut v = Violations::default();
        let ids: Vec<ObjectId> = validate::id_batch("ids", &request.get_ref().ids, &mut v);
        v.finish()?;
        // Their groups count them read first (once each), so that a failure in between
        // leaves nothing counted twice when the client retries.
        for n in self.store.unread_among(me, &ids).await? {
            self.store.groups.reading(&n).await?;
        }
        let updated_count = self.store.mark_read(me, Which::Ids(&ids)).await?;
        Ok(Response::new(MarkNotificationsReadResponse { updated_count }))
    }

    async fn mark_all_notifications_read(
        &self,
        request: Request<MarkAllNotificationsReadRequest>,
    ) -> Result<Response<MarkNotificationsReadResponse>, Status> {
        let me = caller(&request)?;
        // Everything stored up to now (what arrives meanwhile stays unread), then the
        // groups' counts (each group's own mark may reach a little further).
        let up_to = social_kit::paging::fresh_sort_key();
        let updated_count = self.store.mark_read(me, Which::UpTo(up_to)).await?;
        let updated_count =
            updated_count.saturating_add(self.store.groups.mark_all_read(me).await?);
        Ok(Response::new(MarkNotificationsReadResponse { updated_count }))
    }

    type StreamNotificationsStream = BoxStream<'static, Result<Notification, Status>>;

    async fn stream_notifications(
        &self,
        request: Request<StreamNotificationsRequest>,
    ) -> Result<Response<Self::StreamNotificationsStream>, Status> {
        let session = session(&request)?;
        // The stream lives no longer than the token that opened it, nor than its
        // session (a logout, a password change, a revocation: within a second of the
        // end reaching this replica): then the client is told so, and reopens it with a
        // fresh token (resuming as docs/events.md says).
        let left =
            session.expires_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + left;
        let groups = request.get_ref().include_groups;
        let (why_tx, why_rx) = tokio::sync::oneshot::channel();
        let revocations = self.revocations.clone();
        let end = async move {
            let why = tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    "the access token expired; reopen the stream with a fresh one"
                }
                () = ended(revocations, session.session) => {
                    "the session ended; log in again to reopen the stream"
                }
            };
            let _ = why_tx.send(why);
        };
        let live = self.hub.subscribe(session.user, groups)?.take_until(end);
        // Told why, when it was cut (nothing when the stream ended otherwise).
        let cut = futures::stream::once(async move {
            why_rx.await.ok().map(|why| Err(Status::unauthenticated(why)))
        })
        .filter_map(futures::future::ready);
        Ok(Response::new(Box::pin(live.chain(cut))))
    }

    async fn list_notification_groups(
        &self,
        request: Request<ListNotificationGroupsRequest>,
    ) -> Result<Response<ListNotificationGroupsResponse>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let mut v = Violations::default();
        let query = format!("notification_groups:{me}:{}", r.unread_only);
        let page = PageRequest::parse(r, query, &mut v);
        v.finish()?;
        let groups = self.store.groups.list(me, r.unread_only, &page).await?;
        let (groups, next_page_token) = page.finish_into(groups, |g| g.sort_key);
        Ok(Response::new(ListNotificationGroupsResponse { groups, next_page_token }))
    }

    async fn get_unread_group_count(
        &self,
        request: Request<GetUnreadGroupCountRequest>,
    ) -> Result<Response<GetUnreadCountResponse>, Status> {
        let me = caller(&request)?;
        let count = self.store.unread_groups(me).await?;
        Ok(Response::new(GetUnreadCountResponse { count }))
    }

    async fn mark_group_read(
        &self,
        request: Request<MarkGroupReadRequest>,
    ) -> Result<Response<MarkNotificationsReadResponse>, Status> {
        let me = caller(&request)?;
        let sent = &request.get_ref().group_key;
        let key = sent.trim();
        let mut v = Violations::default();
        if key.is_empty() {
            v.add("group_key", "is required");
        } else if sent.len() > 200 {
            v.add("group_key", "must be at most 200 characters");
        }
        v.finish()?;
        let updated_count = self
            .store
            .groups
            .mark_read(me, key)
            .await?
            .ok_or_else(|| social_kit::Error::NotFound("notification group"))?;
        Ok(Response::new(MarkNotificationsReadResponse { updated_count }))
    }
}
