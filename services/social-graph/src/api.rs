//! `social.graph.v1.SocialGraphService`: request → validated ids → store → response.

use bson::oid::ObjectId;
use social_kit::{
    Error, Result,
    auth::{caller, optional_caller},
    client::Peer,
    error::Violations,
    paging::{PageRequest, Paged},
    time::to_timestamp,
    validate,
};
use social_proto::{
    graph::v1::{
        Block, BlockUserRequest, CheckBlocksRequest, CheckBlocksResponse, CountFollowsRequest,
        CountFollowsResponse, ExportUserFollowsRequest, Follow, FollowCounts, FollowRequest,
        GetRelationshipRequest, ListBlocksRequest, ListBlocksResponse, ListFollowerIdsRequest,
        ListFollowerIdsResponse, ListFollowersRequest, ListFollowersResponse,
        ListFollowingIdsRequest, ListFollowingIdsResponse, ListFollowingRequest,
        ListFollowingResponse, ListMutesRequest, ListMutesResponse, Mute, MuteUserRequest,
        Relationship, UnblockUserRequest, UnfollowRequest, UnmuteUserRequest,
        social_graph_service_server::SocialGraphService,
    },
    user::v1::{GetUserRequest, user_service_client::UserServiceClient},
};
use tonic::{Code, Request, Response, Status};

use crate::{
    blocks::BlockDoc,
    checks,
    mutes::{MAX_MUTES, MuteDoc},
    store::{FollowDoc, Store},
};
use social_events::{Payload, new_envelope, outbox::RelayWaker, pb::UserFollowed};

/// The RPCs only other services may call (the gate refuses them without the service
/// credential): they serve other services and some cost many counts per request.
pub const INTERNAL: &[&str] =
    &["ListFollowingIds", "ListFollowerIds", "CountFollows", "ExportUserFollows", "CheckBlocks"];

/// Most ids one ListFollowingIds answer carries.
const MAX_FOLLOWING_IDS: usize = 10_000;
/// Most ids one ListFollowerIds answer carries (and its default).
const MAX_FOLLOWER_IDS: usize = 50_000;
const DEFAULT_FOLLOWER_IDS: usize = 10_000;

pub struct Api {
    store: Store,
    users: Peer,
    relay: RelayWaker,
}

impl Api {
    pub fn new(store: Store, users: Peer, relay: RelayWaker) -> Self {
        Self { store, users, relay }
    }

    /// NOT_FOUND unless the user service knows `user`.
    async fn ensure_user_exists(&self, user: ObjectId) -> Result<()> {
        let request = GetUserRequest { id: user.to_hex() };
        match social_kit::call!(self.users, UserServiceClient.get_user(request)) {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Err(Error::NotFound("user")),
            Err(status) => Err(self.users.error(status)),
        }
    }
}

impl Api {
    /// After a block or mute of `me` on `other` was stored: when either account
    /// was deleted meanwhile (`social_events::removed_users`), `undo` takes it back (its
    /// event woken out) and the caller hears UNAUTHENTICATED for its own account,
    /// NOT_FOUND for the other.
    async fn unless_removed<Undo, F>(&self, me: ObjectId, other: ObjectId, undo: Undo) -> Result<()>
    where
        Undo: FnOnce() -> F,
        F: std::future::Future<Output = Result<bool>>,
    {
        let Some(refused) = checks::removed(&self.store, me, other).await? else {
            return Ok(());
        };
        if undo().await? {
            self.relay.wake();
        }
        Err(refused)
    }

    /// Whether `user` blocks the caller: to them, `user`'s lists are empty, as an
    /// unknown account's.
    async fn hidden_from_caller<T>(&self, request: &Request<T>, user: ObjectId) -> Result<bool> {
        match optional_caller(request) {
            Some(viewer) if viewer != user => {
                Ok(self.store.blocks.get(user, viewer).await?.is_some())
            }
            _ => Ok(false),
        }
    }

    /// A page of `user_id`'s follows where it is `side` (`followee_id`: its followers,
    /// `follower_id`: whom it follows), newest first; none to a reader it blocks, and
    /// without the accounts on the other side that block the reader (the page may come
    /// short, as a post's likes: its token is the page's before they left).
    async fn follows_page<R: Paged>(
        &self,
        request: &Request<R>,
        side: &'static str,
        user_id: &str,
    ) -> Result<(Vec<Follow>, String)> {
        let kind = if side == "followee_id" { "followers" } else { "following" };
        let (user, page) = PageRequest::for_owner(kind, ("user_id", user_id), request.get_ref())?;
        if self.hidden_from_caller(request, user).await? {
            return Ok((Vec::new(), String::new()));
        }
        let docs = self.store.list(side, user, &page).await?;
        let (mut follows, next_page_token) = page.finish(docs, |f| f.sort_key);
        if let Some(viewer) = optional_caller(request) {
            let other = |f: &FollowDoc| {
                if side == "followee_id" { f.follower_id } else { f.followee_id }
            };
            let others: Vec<ObjectId> = follows.iter().map(other).collect();
            let blockers = self.store.blocks.blockers_among(viewer, &others).await?;
            follows.retain(|f| !blockers.contains(&other(f)));
        }
        Ok((follows.into_iter().map(Into::into).collect(), next_page_token))
    }
}

impl From<MuteDoc> for Mute {
    fn from(m: MuteDoc) -> Self {
        Self {
            muter_id: m.muter_id.to_hex(),
            muted_id: m.muted_id.to_hex(),
            notifications: m.notifications,
            expires_at: m.expires_at.map(to_timestamp),
            created_at: Some(to_timestamp(m.created_at)),
        }
    }
}

/// The user and the limit of a request for ids: `limit` 0 means `default`, more than
/// `max` means `max`.
fn ids_request(user: &str, limit: i32, default: usize, max: usize) -> Result<(ObjectId, usize)> {
    let mut v = Violations::default();
    let user = v.take("user_id", validate::object_id(user));
    let limit = match limit {
        n if n < 0 => {
            v.add("limit", "must not be negative");
            0
        }
        0 => default,
        n => (n as usize).min(max),
    };
    v.finish()?;
    Ok((user.unwrap_or_default(), limit))
}

/// The shortest and longest mute with an end (seconds).
const MUTE_SECONDS: std::ops::RangeInclusive<i64> = 60..=365 * 24 * 3600;

impl From<BlockDoc> for Block {
    fn from(b: BlockDoc) -> Self {
        Self {
            blocker_id: b.blocker_id.to_hex(),
            blocked_id: b.blocked_id.to_hex(),
            created_at: Some(to_timestamp(b.created_at)),
        }
    }
}

impl From<FollowDoc> for Follow {
    fn from(f: FollowDoc) -> Self {
        Self {
            follower_id: f.follower_id.to_hex(),
            followee_id: f.followee_id.to_hex(),
            created_at: Some(to_timestamp(f.created_at)),
        }
    }
}

fn id(field: &str, value: &str) -> Result<ObjectId> {
    validate::object_id(value).map_err(|d| Error::invalid(field, d))
}

#[tonic::async_trait]
impl SocialGraphService for Api {
    async fn follow(&self, request: Request<FollowRequest>) -> Result<Response<Follow>, Status> {
        let me = caller(&request)?;
        let followee = id("followee_id", &request.get_ref().followee_id)?;
        if followee == me {
            return Err(Error::invalid("followee_id", "you cannot follow yourself").into());
        }
        if let Some(existing) = self.store.get(me, followee).await? {
            // A retry of a follow whose checks (below) failed checks it now.
            if existing.unchecked_since.is_some()
                && let Some(refused) = checks::follow(&self.store, &self.relay, &existing).await?
            {
                return Err(refused.into());
            }
            return Ok(Response::new(existing.into()));
        }
        if let Some(refused) = checks::blocked(&self.store, me, followee).await? {
            return Err(refused.into());
        }
        self.ensure_user_exists(followee).await?;
        // Tests: a block made between the checks above and the insert below.
        social_kit::pause!("graph::before_follow_insert");
        let event = new_envelope(
            me,
            Payload::UserFollowed(UserFollowed {
                follower_id: me.to_hex(),
                followee_id: followee.to_hex(),
            }),
        );
        let (follow, created) = self.store.follow(me, followee, &event).await?;
        if created {
            self.relay.wake();
            // An account deleted or a block made meanwhile ends it: their own sweeps of
            // follows ran before this insert, or these checks see them (`crate::checks`).
            if let Some(refused) = checks::follow(&self.store, &self.relay, &follow).await? {
                return Err(refused.into());
            }
            tracing::info!(follower = %me, followee = %followee, "followed");
        }
        Ok(Response::new(follow.into()))
    }

    async fn unfollow(&self, request: Request<UnfollowRequest>) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let followee = id("followee_id", &request.get_ref().followee_id)?;
        if followee == me {
            return Err(Error::invalid("followee_id", "you cannot unfollow yourself").into());
        }
        if crate::events::unfollow(&self.store, me, followee).await? {
            self.relay.wake();
            tracing::info!(follower = %me, followee = %followee, "unfollowed");
        }
        Ok(Response::new(()))
    }

    async fn list_followers(
        &self,
        request: Request<ListFollowersRequest>,
    ) -> Result<Response<ListFollowersResponse>, Status> {
        let r = request.get_ref();
        let (follows, next_page_token) =
            self.follows_page(&request, "followee_id", &r.user_id).await?;
        Ok(Response::new(ListFollowersResponse { follows, next_page_token }))
    }

    async fn list_following(
        &self,
        request: Request<ListFollowingRequest>,
    ) -> Result<Response<ListFollowingResponse>, Status> {
        let r = request.get_ref();
        let (follows, next_page_token) =
            self.follows_page(&request, "follower_id", &r.user_id).await?;
        Ok(Response::new(ListFollowingResponse { follows, next_page_token }))
    }

    async fn get_relationship(
        &self,
        request: Request<GetRelationshipRequest>,
    ) -> Result<Response<Relationship>, Status> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let a = v.take("user_id", validate::object_id(&r.user_id));
        let b = v.take("other_user_id", validate::object_id(&r.other_user_id));
        v.finish()?;
        let (Some(a), Some(b)) = (a, b) else {
            return Err(Error::invalid("user_id", "is required").into());
        };
        let (following, followed_by) =
            tokio::try_join!(self.store.get(a, b), self.store.get(b, a))?;
        // Whom one blocks or mutes is told to that one alone.
        let (blocking, blocked_by, muting) = if optional_caller(&request) == Some(a) {
            let (blocking, blocked_by, muting) = tokio::try_join!(
                self.store.blocks.get(a, b),
                self.store.blocks.get(b, a),
                self.store.mutes.mutes(a, b)
            )?;
            (blocking.is_some(), blocked_by.is_some(), muting)
        } else {
            (false, false, false)
        };
        Ok(Response::new(Relationship {
            following: following.is_some(),
            followed_by: followed_by.is_some(),
            blocking,
            blocked_by,
            muting,
        }))
    }

    async fn list_following_ids(
        &self,
        request: Request<ListFollowingIdsRequest>,
    ) -> Result<Response<ListFollowingIdsResponse>, Status> {
        let r = request.get_ref();
        let (user, limit) = ids_request(&r.user_id, r.limit, MAX_FOLLOWING_IDS, MAX_FOLLOWING_IDS)?;
        let among = match r.among.is_empty() {
            true => None,
            false => {
                let mut v = Violations::default();
                let ids = validate::id_batch("among", &r.among, &mut v);
                v.finish()?;
                Some(ids)
            }
        };
        let (mut ids, truncated) = match &among {
            Some(among) => (self.store.following_among(user, among).await?, false),
            None => {
                let mut ids = self.store.following_ids(user, limit).await?;
                let truncated = ids.len() > limit;
                ids.truncate(limit);
                (ids, truncated)
            }
        };
        let held = if r.without_muted || r.with_mutes {
            self.store.mutes.held_by(user, among.as_deref()).await?
        } else {
            Vec::new()
        };
        if r.without_muted && !held.is_empty() {
            let muted: std::collections::HashSet<ObjectId> = held.iter().map(|m| m.0).collect();
            ids.retain(|id| !muted.contains(id));
        }
        let mutes = match r.with_mutes {
            true => held
                .into_iter()
                .map(|(muted, expires_at)| Mute {
                    muter_id: user.to_hex(),
                    muted_id: muted.to_hex(),
                    expires_at: expires_at.map(to_timestamp),
                    ..Default::default()
                })
                .collect(),
            false => Vec::new(),
        };
        Ok(Response::new(ListFollowingIdsResponse {
            user_ids: ids.into_iter().map(ObjectId::to_hex).collect(),
            truncated,
            mutes,
        }))
    }

    async fn list_follower_ids(
        &self,
        request: Request<ListFollowerIdsRequest>,
    ) -> Result<Response<ListFollowerIdsResponse>, Status> {
        let r = request.get_ref();
        let (user, limit) =
            ids_request(&r.user_id, r.limit, DEFAULT_FOLLOWER_IDS, MAX_FOLLOWER_IDS)?;
        let mut ids = self.store.follower_ids(user, limit).await?;
        let truncated = ids.len() > limit;
        ids.truncate(limit);
        Ok(Response::new(ListFollowerIdsResponse {
            user_ids: ids.into_iter().map(ObjectId::to_hex).collect(),
            truncated,
        }))
    }

    async fn count_follows(
        &self,
        request: Request<CountFollowsRequest>,
    ) -> Result<Response<CountFollowsResponse>, Status> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let ids = validate::id_batch("user_ids", &r.user_ids, &mut v);
        v.finish()?;
        let as_of = social_kit::time::as_of_ms(r.as_of.as_ref());
        let mut counts = Vec::with_capacity(ids.len());
        for user in ids {
            let (followers_count, following_count) = tokio::try_join!(
                self.store.count("followee_id", user, as_of),
                self.store.count("follower_id", user, as_of)
            )?;
            counts.push(FollowCounts { user_id: user.to_hex(), followers_count, following_count });
        }
        Ok(Response::new(CountFollowsResponse { counts }))
    }

    async fn block_user(
        &self,
        request: Request<BlockUserRequest>,
    ) -> Result<Response<Block>, Status> {
        let me = caller(&request)?;
        let target = id("user_id", &request.get_ref().user_id)?;
        if target == me {
            return Err(Error::invalid("user_id", "you cannot block yourself").into());
        }
        if let Some(existing) = self.store.blocks.get(me, target).await? {
            return Ok(Response::new(existing.into()));
        }
        self.ensure_user_exists(target).await?;
        let (block, created) = self.store.blocks.block(me, target).await?;
        if created {
            self.relay.wake();
            // Follows end now, after the block is stored: a follow racing it checks for
            // the block after its own insert. The block's event ends them again if this
            // stops half-way (`crate::events`).
            crate::events::end_follows_between(&self.store, me, target).await?;
            self.relay.wake();
            self.unless_removed(me, target, || self.store.blocks.unblock(me, target)).await?;
            tracing::info!(blocker = %me, blocked = %target, "blocked");
        }
        Ok(Response::new(block.into()))
    }

    async fn unblock_user(
        &self,
        request: Request<UnblockUserRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let target = id("user_id", &request.get_ref().user_id)?;
        if target == me {
            return Err(Error::invalid("user_id", "you cannot unblock yourself").into());
        }
        if self.store.blocks.unblock(me, target).await? {
            self.relay.wake();
            tracing::info!(blocker = %me, blocked = %target, "unblocked");
        }
        Ok(Response::new(()))
    }

    async fn list_blocks(
        &self,
        request: Request<ListBlocksRequest>,
    ) -> Result<Response<ListBlocksResponse>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let page = PageRequest::of(r, format!("blocks:{me}"))?;
        let docs = self.store.blocks.list(me, &page).await?;
        let (blocks, next_page_token) = page.finish_into(docs, |b| b.sort_key);
        Ok(Response::new(ListBlocksResponse { blocks, next_page_token }))
    }

    async fn check_blocks(
        &self,
        request: Request<CheckBlocksRequest>,
    ) -> Result<Response<CheckBlocksResponse>, Status> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let user = v.take("user_id", validate::object_id(&r.user_id));
        let others = validate::id_batch("other_user_ids", &r.other_user_ids, &mut v);
        v.finish()?;
        let (blocking, blocked_by) =
            self.store.blocks.between(user.unwrap_or_default(), &others).await?;
        let hex = |ids: Vec<ObjectId>| ids.into_iter().map(ObjectId::to_hex).collect();
        Ok(Response::new(CheckBlocksResponse {
            blocking: hex(blocking),
            blocked_by: hex(blocked_by),
        }))
    }

    async fn mute_user(&self, request: Request<MuteUserRequest>) -> Result<Response<Mute>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let mut v = Violations::default();
        let target = v.take("user_id", validate::object_id(&r.user_id));
        if target == Some(me) {
            v.add("user_id", "you cannot mute yourself");
        }
        let expires_at = match r.duration_seconds {
            0 => None,
            s if MUTE_SECONDS.contains(&s) => Some(bson::DateTime::from_millis(
                bson::DateTime::now().timestamp_millis() + s * 1000,
            )),
            _ => {
                v.add(
                    "duration_seconds",
                    "must be 0 (until unmuted) or from 60 to 31536000 (a year)",
                );
                None
            }
        };
        v.finish()?;
        let target = target.unwrap_or_default();
        let notifications = r.notifications.unwrap_or(true);
        let current = self.store.mutes.get(me, target).await?;
        let now = bson::DateTime::now();
        if let Some(m) = &current
            && m.holds(now)
            && m.notifications == notifications
            && m.expires_at.is_none()
            && expires_at.is_none()
        {
            return Ok(Response::new(m.clone().into()));
        }
        self.ensure_user_exists(target).await?;
        // New settings (or an expired mute): the old mute ends, a new one is made.
        if let Some(m) = &current {
            if self.store.mutes.end(m).await? {
                self.relay.wake();
            }
        } else if self.store.mutes.count(me).await? >= MAX_MUTES {
            return Err(Error::FailedPrecondition(
                "you mute 10000 accounts already: unmute some first",
            )
            .into());
        }
        let (mute, created) = self.store.mutes.mute(me, target, notifications, expires_at).await?;
        if created {
            self.relay.wake();
            // An account deleted meanwhile keeps no mute (its deletion ended the others).
            self.unless_removed(me, target, || self.store.mutes.end(&mute)).await?;
            tracing::info!(muter = %me, muted = %target, "muted");
        }
        Ok(Response::new(mute.into()))
    }

    async fn unmute_user(
        &self,
        request: Request<UnmuteUserRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let target = id("user_id", &request.get_ref().user_id)?;
        if let Some(mute) = self.store.mutes.get(me, target).await?
            && self.store.mutes.end(&mute).await?
        {
            self.relay.wake();
            tracing::info!(muter = %me, muted = %target, "unmuted");
        }
        Ok(Response::new(()))
    }

    async fn list_mutes(
        &self,
        request: Request<ListMutesRequest>,
    ) -> Result<Response<ListMutesResponse>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let page = PageRequest::of(r, format!("mutes:{me}"))?;
        let docs = self.store.mutes.list(me, &page).await?;
        let (docs, next_page_token) = page.finish(docs, |m| m.sort_key);
        let now = bson::DateTime::now();
        Ok(Response::new(ListMutesResponse {
            mutes: docs.into_iter().filter(|m| m.holds(now)).map(Into::into).collect(),
            next_page_token,
        }))
    }

    type ExportUserFollowsStream = futures::stream::BoxStream<'static, Result<Follow, Status>>;

    async fn export_user_follows(
        &self,
        request: Request<ExportUserFollowsRequest>,
    ) -> Result<Response<Self::ExportUserFollowsStream>, Status> {
        use futures::StreamExt;
        let user = id("user_id", &request.get_ref().user_id)?;
        let side = |side: &'static str| {
            let store = self.store.clone();
            social_kit::export::paged(move |after| {
                let store = store.clone();
                async move {
                    let page = store.page_of(side, user, after).await?;
                    Ok(page.into_iter().map(|f| (f.sort_key, Follow::from(f))).collect())
                }
            })
        };
        Ok(Response::new(side("follower_id").chain(side("followee_id")).boxed()))
    }
}
