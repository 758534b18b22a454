//! `social.graph.v1.SocialGraphService`: request → validated ids → store → response.

use bson::oid::ObjectId;
use social_kit::{
    Error, Result, auth::caller, client::Peer, error::Violations, paging::PageRequest,
    time::to_timestamp, validate,
};
use social_proto::{
    graph::v1::{
        CountFollowsRequest, CountFollowsResponse, ExportUserFollowsRequest, Follow, FollowCounts,
        FollowRequest, GetRelationshipRequest, ListFollowersRequest, ListFollowersResponse,
        ListFollowingIdsRequest, ListFollowingIdsResponse, ListFollowingRequest,
        ListFollowingResponse, Relationship, UnfollowRequest,
        social_graph_service_server::SocialGraphService,
    },
    user::v1::{GetUserRequest, user_service_client::UserServiceClient},
};
use tonic::{Code, Request, Response, Status};

use crate::store::{FollowDoc, Store};
use social_events::{
    Payload, new_envelope,
    outbox::RelayWaker,
    pb::{UserFollowed, UserUnfollowed},
};

/// The RPCs only other services may call (the gate refuses them without the service
/// credential): they serve other services and some cost many counts per request.
pub const INTERNAL: &[&str] = &["ListFollowingIds", "CountFollows", "ExportUserFollows"];

/// Most ids one ListFollowingIds answer carries.
const MAX_FOLLOWING_IDS: usize = 10_000;

pub struct Api {
    store: Store,
    users: Peer,
    relay: RelayWaker,
}

impl Api {
    pub fn new(store: Store, users: Peer, relay: RelayWaker) -> Self {
        Self {
            store,
            users,
            relay,
        }
    }

    /// NOT_FOUND unless the user service knows `user`.
    async fn ensure_user_exists(&self, user: ObjectId) -> Result<()> {
        let mut client = UserServiceClient::new(self.users.channel());
        let request = self.users.request(GetUserRequest { id: user.to_hex() });
        match self.users.call(client.get_user(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Err(Error::NotFound("user")),
            Err(status) => Err(self.users.error(status)),
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
            return Ok(Response::new(existing.into()));
        }
        self.ensure_user_exists(followee).await?;
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
            // An account deleted meanwhile keeps no follow (`social_events::removed_users`).
            let removed = &self.store.removed_users;
            if removed.any(&[me, followee]).await.map_err(Error::from)? {
                crate::events::unfollow(&self.store, me, followee).await?;
                return Err(if removed.any(&[me]).await.map_err(Error::from)? {
                    Error::Unauthenticated("this account was deleted")
                } else {
                    Error::NotFound("user")
                }
                .into());
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
        let event = new_envelope(
            me,
            Payload::UserUnfollowed(UserUnfollowed {
                follower_id: me.to_hex(),
                followee_id: followee.to_hex(),
            }),
        );
        if self.store.unfollow(me, followee, &event).await? {
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
        let (user, page) = PageRequest::for_owner(
            "followers",
            "user_id",
            &r.user_id,
            r.page_size,
            &r.page_token,
        )?;
        let docs = self.store.list("followee_id", user, &page).await?;
        let (docs, next_page_token) = page.finish(docs, |f| f.sort_key);
        Ok(Response::new(ListFollowersResponse {
            follows: docs.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn list_following(
        &self,
        request: Request<ListFollowingRequest>,
    ) -> Result<Response<ListFollowingResponse>, Status> {
        let r = request.get_ref();
        let (user, page) = PageRequest::for_owner(
            "following",
            "user_id",
            &r.user_id,
            r.page_size,
            &r.page_token,
        )?;
        let docs = self.store.list("follower_id", user, &page).await?;
        let (docs, next_page_token) = page.finish(docs, |f| f.sort_key);
        Ok(Response::new(ListFollowingResponse {
            follows: docs.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
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
        Ok(Response::new(Relationship {
            following: following.is_some(),
            followed_by: followed_by.is_some(),
        }))
    }

    async fn list_following_ids(
        &self,
        request: Request<ListFollowingIdsRequest>,
    ) -> Result<Response<ListFollowingIdsResponse>, Status> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let user = v.take("user_id", validate::object_id(&r.user_id));
        let limit = match r.limit {
            n if n < 0 => {
                v.add("limit", "must not be negative");
                0
            }
            0 => MAX_FOLLOWING_IDS,
            n => (n as usize).min(MAX_FOLLOWING_IDS),
        };
        v.finish()?;
        let mut ids = self
            .store
            .following_ids(user.unwrap_or_default(), limit)
            .await?;
        let truncated = ids.len() > limit;
        ids.truncate(limit);
        Ok(Response::new(ListFollowingIdsResponse {
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
            counts.push(FollowCounts {
                user_id: user.to_hex(),
                followers_count,
                following_count,
            });
        }
        Ok(Response::new(CountFollowsResponse { counts }))
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
                    Ok(page
                        .into_iter()
                        .map(|f| (f.sort_key, Follow::from(f)))
                        .collect())
                }
            })
        };
        Ok(Response::new(
            side("follower_id").chain(side("followee_id")).boxed(),
        ))
    }
}
