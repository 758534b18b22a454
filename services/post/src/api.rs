//! `social.post.v1.PostService`: request → validated value → store → response.

use bson::oid::ObjectId;
use social_content as content;
use social_events::{
    Payload, new_envelope,
    outbox::RelayWaker,
    pb::{PostCreated, PostDeleted},
};
use social_kit::{
    Error, Result,
    auth::{caller, optional_caller},
    client::Peer,
    error::Violations,
    paging::PageRequest,
    time::to_timestamp,
    validate,
};
use social_proto::{
    graph::v1::{ListFollowingIdsRequest, social_graph_service_client::SocialGraphServiceClient},
    post::v1::{
        BatchGetPostsRequest, BatchGetPostsResponse, CreatePostRequest, DeletePostRequest,
        ExportUserPostsRequest, GetPostRequest, ListHomeFeedRequest, ListHomeFeedResponse,
        ListUserPostsRequest, ListUserPostsResponse, Post, RemovePostRequest, UpdatePostRequest,
        post_service_server::PostService,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    store::{PostDoc, Store},
    timelines::Timelines,
};

/// The RPCs only other services may call (the gate refuses them without the service
/// credential): they serve other services and some cost many counts per request.
pub const INTERNAL: &[&str] = &["ExportUserPosts", "RemovePost"];

pub struct Api {
    store: Store,
    graph: Peer,
    relay: RelayWaker,
    /// Home feeds read from memory where they can be (see `crate::timelines`).
    timelines: Option<Timelines>,
}

impl Api {
    pub fn new(store: Store, graph: Peer, relay: RelayWaker, timelines: Option<Timelines>) -> Self {
        Self { store, graph, relay, timelines }
    }

    /// A page of `me`'s home feed merged in MongoDB from the posts of whom `me` follows.
    async fn pulled_feed(&self, me: ObjectId, page: &PageRequest) -> Result<Vec<PostDoc>> {
        let mut authors = self.following(me).await?;
        authors.push(me);
        self.store.by_authors(&authors, page).await
    }

    /// The accounts `reader` follows, from the social-graph service.
    async fn following(&self, reader: ObjectId) -> Result<Vec<ObjectId>> {
        let request = ListFollowingIdsRequest {
            user_id: reader.to_hex(),
            limit: 0,
            // Who the reader mutes stays out of the feed.
            without_muted: true,
            with_mutes: false,
            among: Vec::new(),
        };
        let answer =
            social_kit::call!(self.graph, SocialGraphServiceClient.list_following_ids(request))
                .map_err(|s| self.graph.error(s))?;
        if answer.truncated {
            tracing::warn!(reader = %reader, "follows more accounts than the feed reads; using the most recent follows");
        }
        crate::timelines::peer_ids(&answer.user_ids)
    }

    /// Post `id`, read for `viewer`: NOT_FOUND where it does not exist or its author
    /// blocks `viewer` (to whom it is absent).
    async fn visible(&self, viewer: Option<ObjectId>, id: ObjectId) -> Result<PostDoc> {
        let post = self.store.get(id).await?.ok_or(Error::NotFound("post"))?;
        if !self.store.blocks.hidden_from(viewer, &[post.user_id]).await?.is_empty() {
            return Err(Error::NotFound("post"));
        }
        Ok(post)
    }

    /// Post `id`, which `me` is about to change: NOT_FOUND as for a read (a post hidden
    /// by a block does not show it exists to a write either), PERMISSION_DENIED (`why`)
    /// where it is another's.
    async fn own(&self, me: ObjectId, id: ObjectId, why: &'static str) -> Result<PostDoc> {
        let post = self.visible(Some(me), id).await?;
        if post.user_id != me {
            return Err(Error::PermissionDenied(why));
        }
        Ok(post)
    }
}

impl From<PostDoc> for Post {
    fn from(p: PostDoc) -> Self {
        Self {
            id: p.id.to_hex(),
            user_id: p.user_id.to_hex(),
            content: p.content,
            media: p.media.into_iter().map(Into::into).collect(),
            // Events may land out of order (an unlike before its like): the stored
            // counts converge; a client never sees them below zero.
            likes_count: p.likes_count.max(0),
            comments_count: p.comments_count.max(0),
            created_at: Some(to_timestamp(p.created_at)),
            updated_at: Some(to_timestamp(p.updated_at)),
        }
    }
}

/// What a deleted account's token gets for a write.
const ACCOUNT_DELETED: &str = "this account was deleted";

fn id(field: &str, value: &str) -> Result<ObjectId> {
    validate::object_id(value).map_err(|d| Error::invalid(field, d))
}

#[tonic::async_trait]
impl PostService for Api {
    async fn create_post(
        &self,
        request: Request<CreatePostRequest>,
    ) -> Result<Response<Post>, Status> {
        let me = caller(&request)?;
        let key = social_kit::validate::idempotency_key(&request)?;
        let r = request.into_inner();
        let mut v = Violations::default();
        let text = content::text("content", &r.content, &mut v);
        let media = content::media("media", &r.media, &mut v);
        content::require_something("content", &text, &media, &mut v);
        v.finish()?;
        let mut post = PostDoc::new(me, text, media);
        post.request_key = key.map(|k| format!("{me}:{k}"));
        let event = new_envelope(
            me,
            Payload::PostCreated(PostCreated {
                post_id: post.id.to_hex(),
                author_id: me.to_hex(),
                content: post.content.clone(),
            }),
        );
        let post = match self.store.insert(&post, &event).await? {
            // A retry: the post its first try stored, while it stands (checked below as
            // the first try checked it, in case that try stopped before).
            Some(earlier) if earlier.state != crate::store::ACTIVE => {
                return Err(Error::NotFound("post").into());
            }
            Some(earlier) => earlier,
            None => {
                self.relay.wake();
                post
            }
        };
        // An account deleted meanwhile keeps nothing (see `crate::checks`).
        if !crate::checks::post(&self.store, &self.relay, &post).await? {
            return Err(Error::Unauthenticated(ACCOUNT_DELETED).into());
        }
        if let Some(timelines) = &self.timelines {
            timelines.push_own(&post).await;
        }
        tracing::info!(post_id = %post.id, author = %me, "post created");
        Ok(Response::new(post.into()))
    }

    async fn get_post(&self, request: Request<GetPostRequest>) -> Result<Response<Post>, Status> {
        let post_id = id("id", &request.get_ref().id)?;
        let post = self.visible(optional_caller(&request), post_id).await?;
        Ok(Response::new(post.into()))
    }

    async fn batch_get_posts(
        &self,
        request: Request<BatchGetPostsRequest>,
    ) -> Result<Response<BatchGetPostsResponse>, Status> {
        let mut v = Violations::default();
        let ids = validate::id_batch("ids", &request.get_ref().ids, &mut v);
        v.finish()?;
        let mut posts = self.store.by_ids(&ids).await?;
        let authors: Vec<ObjectId> = posts.iter().map(|p| p.user_id).collect();
        let viewer = optional_caller(&request);
        let hidden = self.store.blocks.hidden_from(viewer, &authors).await?;
        posts.retain(|p| !hidden.contains(&p.user_id));
        posts.sort_by_key(|p| ids.iter().position(|id| *id == p.id));
        Ok(Response::new(BatchGetPostsResponse {
            posts: posts.into_iter().map(Into::into).collect(),
        }))
    }

    async fn update_post(
        &self,
        request: Request<UpdatePostRequest>,
    ) -> Result<Response<Post>, Status> {
        let me = caller(&request)?;
        let r = request.into_inner();
        let post = r.post.ok_or_else(|| Error::invalid("post", "is required"))?;
        let post_id = id("post.id", &post.id)?;
        let current = self.own(me, post_id, "only the author can change a post").await?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = content::update(
            "post",
            &post.content,
            &post.media,
            &paths,
            (&current.content, &current.media),
        )?;
        let Some(updated) = self.store.update(post_id, me, update).await? else {
            // Deleted meanwhile, or a concurrent change left nothing the update keeps.
            return Err(match self.store.get(post_id).await? {
                Some(_) => content::BodyUpdate::emptied("post"),
                None => Error::NotFound("post"),
            }
            .into());
        };
        Ok(Response::new(updated.into()))
    }

    async fn delete_post(
        &self,
        request: Request<DeletePostRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let post_id = id("id", &request.get_ref().id)?;
        self.own(me, post_id, "only the author can delete a post").await?;
        let event = new_envelope(
            me,
            Payload::PostDeleted(PostDeleted { post_id: post_id.to_hex(), author_id: me.to_hex() }),
        );
        if !self.store.delete(post_id, me, &event).await? {
            return Err(Error::NotFound("post").into());
        }
        self.relay.wake();
        tracing::info!(post_id = %post_id, author = %me, "post deleted");
        Ok(Response::new(()))
    }

    async fn list_user_posts(
        &self,
        request: Request<ListUserPostsRequest>,
    ) -> Result<Response<ListUserPostsResponse>, Status> {
        let r = request.get_ref();
        let (user, page) = PageRequest::for_owner("user-posts", ("user_id", &r.user_id), r)?;
        // To a reader the author blocks, the author has no posts (as an unknown one).
        let viewer = optional_caller(&request);
        if !self.store.blocks.hidden_from(viewer, &[user]).await?.is_empty() {
            return Ok(Response::new(ListUserPostsResponse::default()));
        }
        let docs = self.store.by_authors(&[user], &page).await?;
        let (posts, next_page_token) = page.finish_into(docs, |p| p.sort_key);
        Ok(Response::new(ListUserPostsResponse { posts, next_page_token }))
    }

    async fn list_home_feed(
        &self,
        request: Request<ListHomeFeedRequest>,
    ) -> Result<Response<ListHomeFeedResponse>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let page = PageRequest::of(r, format!("home-feed:{me}"))?;
        let from_memory = match &self.timelines {
            Some(timelines) => timelines.page(me, &page).await?,
            None => None,
        };
        let docs = match from_memory {
            Some(docs) => docs,
            None => self.pulled_feed(me, &page).await?,
        };
        let (mut docs, next_page_token) = page.finish(docs, |p| p.sort_key);
        // Whatever the timeline holds, an author who blocks the reader is absent (as from
        // GetPost): a block reaches the timeline through events, which may lag or be lost
        // with a failover. Filtered after the page is cut: a page may come short, never
        // skip one.
        let authors: Vec<ObjectId> = docs.iter().map(|p| p.user_id).collect();
        let hidden = self.store.blocks.hidden_from(Some(me), &authors).await?;
        docs.retain(|p| !hidden.contains(&p.user_id));
        let posts = docs.into_iter().map(Into::into).collect();
        Ok(Response::new(ListHomeFeedResponse { posts, next_page_token }))
    }

    async fn remove_post(
        &self,
        request: Request<RemovePostRequest>,
    ) -> Result<Response<()>, Status> {
        let post_id = id("id", &request.get_ref().id)?;
        let Some(current) = self.store.get(post_id).await? else {
            return Ok(Response::new(())); // gone already
        };
        let author = current.user_id;
        let event = new_envelope(
            author,
            Payload::PostDeleted(PostDeleted {
                post_id: post_id.to_hex(),
                author_id: author.to_hex(),
            }),
        );
        if self.store.delete(post_id, author, &event).await? {
            self.relay.wake();
            let moderator = &request.get_ref().moderator_id;
            tracing::info!(post_id = %post_id, %author, %moderator, "post removed by a moderator");
        }
        Ok(Response::new(()))
    }

    type ExportUserPostsStream = futures::stream::BoxStream<'static, Result<Post, Status>>;

    async fn export_user_posts(
        &self,
        request: Request<ExportUserPostsRequest>,
    ) -> Result<Response<Self::ExportUserPostsStream>, Status> {
        let author = id("user_id", &request.get_ref().user_id)?;
        let store = self.store.clone();
        Ok(Response::new(social_kit::export::paged(move |after| {
            let store = store.clone();
            async move {
                let page = store.page_of_author(author, after).await?;
                Ok(page.into_iter().map(|p| (p.sort_key, Post::from(p))).collect())
            }
        })))
    }
}
