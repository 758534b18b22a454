//! `social.engagement.v1.EngagementService`: request → validated value → store →
//! response, with the event of each change written in the same document update.

use bson::oid::ObjectId;
use social_content as content;
use social_events::{
    Envelope, Payload, new_envelope,
    outbox::RelayWaker,
    pb::{CommentCreated, CommentLiked, PostLiked},
};
use social_kit::{
    Error, Result, auth::caller, client::Peer, error::Violations, paging::PageRequest,
    time::to_timestamp, validate,
};
use social_proto::{
    engagement::v1::{
        Comment, CountPostEngagementRequest, CountPostEngagementResponse, CreateCommentRequest,
        DeleteCommentRequest, EngagementRecord, ExportUserEngagementRequest, GetCommentRequest,
        Like, LikeCommentRequest, LikePostRequest, ListCommentsRequest, ListCommentsResponse,
        ListPostLikesRequest, ListPostLikesResponse, PostEngagementCounts, RemoveCommentRequest,
        UnlikeCommentRequest, UnlikePostRequest, UpdateCommentRequest,
        engagement_service_server::EngagementService,
    },
    post::v1::{GetPostRequest, post_service_client::PostServiceClient},
};
use tonic::{Code, Request, Response, Status};

use crate::{
    checks,
    store::{CommentDoc, LikeDoc, Store, Target},
};

/// The RPCs only other services may call (the gate refuses them without the service
/// credential): they serve other services and some cost many counts per request.
pub const INTERNAL: &[&str] = &["CountPostEngagement", "ExportUserEngagement", "RemoveComment"];

pub struct Api {
    store: Store,
    posts: Peer,
    /// Asked whether a block stands between a writer and an author.
    graph: Peer,
    relay: RelayWaker,
}

impl Api {
    pub fn new(store: Store, (posts, graph): (Peer, Peer), relay: RelayWaker) -> Self {
        Self { store, posts, graph, relay }
    }

    /// Refuses a write by `me` on what `authors` made (`what`) across a block, before
    /// anything is stored (the check after the insert closes the race, see `checks`).
    async fn refuse_blocked(
        &self,
        me: ObjectId,
        authors: &[ObjectId],
        what: &'static str,
    ) -> Result<()> {
        match checks::blocks(&self.graph, me, authors, what).await? {
            Some(verdict) => checks::refusal(verdict),
            None => Ok(()),
        }
    }

    /// The author of post `id`, or NOT_FOUND, from the post service.
    async fn post_author(&self, id: ObjectId) -> Result<ObjectId> {
        let request = GetPostRequest { id: id.to_hex() };
        match social_kit::call!(self.posts, PostServiceClient.get_post(request)) {
            Ok(post) => ObjectId::parse_str(&post.user_id).map_err(Error::internal),
            Err(status) if status.code() == Code::NotFound => Err(Error::NotFound("post")),
            Err(status) => Err(self.posts.error(status)),
        }
    }

    /// Records a like with its event (nothing if the user already likes the target),
    /// then checks it against deletions (see `crate::checks`).
    async fn like(&self, mut like: LikeDoc, event: Envelope) -> Result<()> {
        // Tests: a block made between the checks before and the insert.
        social_kit::pause!("engagement::before_like_insert");
        // As stored (its start's time among it), for the checks' undo to end after it.
        if self.store.like(&mut like, &event).await? {
            // Stored with its event, whatever the checks below say.
            self.relay.wake();
            refuse(checks::like(&self.store, &self.relay, &self.graph, &like).await?)?;
        }
        Ok(())
    }

    /// The caller's existing like of `target`, if any. One whose checks did not finish
    /// (an earlier try failed half-way) is checked now: taken back under a deleted post
    /// (NOT_FOUND), undone for a deleted account (UNAUTHENTICATED).
    async fn existing_like(
        &self,
        me: ObjectId,
        kind: Target,
        target: ObjectId,
    ) -> Result<Option<LikeDoc>> {
        let Some(like) = self.store.active_like(me, kind, target).await? else {
            return Ok(None);
        };
        if like.unchecked_since.is_some() {
            refuse(checks::like(&self.store, &self.relay, &self.graph, &like).await?)?;
        }
        Ok(Some(like))
    }

    /// Drops from `comments` those the caller must not see: written by someone who
    /// blocks them, or under a post whose author does. Under the caller's own post every
    /// comment stays: its author moderates it.
    async fn hide_blocked<T>(
        &self,
        request: &Request<T>,
        comments: &mut Vec<CommentDoc>,
    ) -> Result<()> {
        let viewer = social_kit::auth::optional_caller(request);
        let authors: Vec<ObjectId> =
            comments.iter().flat_map(|c| [c.user_id, c.post_author_id]).collect();
        let blockers = self.store.blocks.hidden_from(viewer, &authors).await?;
        comments.retain(|c| !absent(viewer, c, &blockers));
        Ok(())
    }

    /// Whether `comment` is absent to `me`: its author or its post's author blocks `me`,
    /// as ListComments leaves it out (under her own post an author sees every comment).
    async fn hidden(&self, me: ObjectId, comment: &CommentDoc) -> Result<bool> {
        if comment.post_author_id == me {
            return Ok(false); // no lookup: she sees them all
        }
        let authors = [comment.user_id, comment.post_author_id];
        let blockers = self.store.blocks.hidden_from(Some(me), &authors).await?;
        Ok(absent(Some(me), comment, &blockers))
    }

    /// Why `me` may not change another's `comment`: NOT_FOUND where it is hidden from
    /// `me` (a write does not show it exists either), else PERMISSION_DENIED (`why`).
    async fn not_yours(&self, me: ObjectId, comment: &CommentDoc, why: &'static str) -> Error {
        match self.hidden(me, comment).await {
            Ok(false) => Error::PermissionDenied(why),
            Ok(true) => Error::NotFound("comment"),
            Err(e) => e,
        }
    }

    /// NOT_FOUND unless post `id` exists and `me` may see it (for an unlike with nothing
    /// to undo: a post hidden by a block does not show it exists).
    async fn require_post(&self, me: ObjectId, id: ObjectId) -> Result<()> {
        let author = self.post_author(id).await?;
        if !self.store.blocks.hidden_from(Some(me), &[author]).await?.is_empty() {
            return Err(Error::NotFound("post"));
        }
        Ok(())
    }
}

/// Whether `comment` is absent to `viewer`, `blockers` being those who block `viewer`:
/// written by one of them, or under a post one of them wrote; never under the viewer's
/// own post (its author moderates it).
fn absent(viewer: Option<ObjectId>, comment: &CommentDoc, blockers: &[ObjectId]) -> bool {
    Some(comment.post_author_id) != viewer
        && (blockers.contains(&comment.user_id) || blockers.contains(&comment.post_author_id))
}

impl From<LikeDoc> for Like {
    fn from(l: LikeDoc) -> Self {
        Self {
            user_id: l.user_id.to_hex(),
            post_id: l.post_id.to_hex(),
            comment_id: l.comment_id.map(|c| c.to_hex()),
            created_at: Some(to_timestamp(l.created_at)),
        }
    }
}

impl From<CommentDoc> for Comment {
    fn from(c: CommentDoc) -> Self {
        Self {
            id: c.id.to_hex(),
            post_id: c.post_id.to_hex(),
            user_id: c.user_id.to_hex(),
            content: c.content,
            media: c.media.into_iter().map(Into::into).collect(),
            // Events may land out of order (an unlike before its like): the stored
            // count converges; a client never sees it below zero.
            likes_count: c.likes_count.max(0),
            created_at: Some(to_timestamp(c.created_at)),
            updated_at: Some(to_timestamp(c.updated_at)),
        }
    }
}

use checks::refusal as refuse;

fn id(field: &str, value: &str) -> Result<ObjectId> {
    validate::object_id(value).map_err(|d| Error::invalid(field, d))
}

#[tonic::async_trait]
impl EngagementService for Api {
    async fn like_post(&self, request: Request<LikePostRequest>) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let post = id("post_id", &request.get_ref().post_id)?;
        if self.existing_like(me, Target::Post, post).await?.is_some() {
            return Ok(Response::new(()));
        }
        let author = self.post_author(post).await?;
        self.refuse_blocked(me, &[author], "post").await?;
        let event = new_envelope(
            me,
            Payload::PostLiked(PostLiked {
                post_id: post.to_hex(),
                post_author_id: author.to_hex(),
                user_id: me.to_hex(),
            }),
        );
        self.like(LikeDoc::new(me, Target::Post, post, post, author), event).await?;
        Ok(Response::new(()))
    }

    async fn unlike_post(
        &self,
        request: Request<UnlikePostRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let post = id("post_id", &request.get_ref().post_id)?;
        if let Some(like) = self.store.active_like(me, Target::Post, post).await? {
            if self.store.undo_like(&like, me).await? {
                self.relay.wake();
            }
        } else {
            self.require_post(me, post).await?;
        }
        Ok(Response::new(()))
    }

    async fn like_comment(
        &self,
        request: Request<LikeCommentRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let comment_id = id("comment_id", &request.get_ref().comment_id)?;
        if self.existing_like(me, Target::Comment, comment_id).await?.is_some() {
            return Ok(Response::new(()));
        }
        let comment = self.store.comment(comment_id).await?.ok_or(Error::NotFound("comment"))?;
        let authors = [comment.user_id, comment.post_author_id];
        self.refuse_blocked(me, &authors, "comment").await?;
        let event = new_envelope(
            me,
            Payload::CommentLiked(CommentLiked {
                comment_id: comment.id.to_hex(),
                post_id: comment.post_id.to_hex(),
                comment_author_id: comment.user_id.to_hex(),
                user_id: me.to_hex(),
            }),
        );
        let like = LikeDoc::new(me, Target::Comment, comment.id, comment.post_id, comment.user_id);
        self.like(like, event).await?;
        Ok(Response::new(()))
    }

    async fn unlike_comment(
        &self,
        request: Request<UnlikeCommentRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let comment_id = id("comment_id", &request.get_ref().comment_id)?;
        if let Some(like) = self.store.active_like(me, Target::Comment, comment_id).await? {
            if self.store.undo_like(&like, me).await? {
                self.relay.wake();
            }
        } else {
            // Nothing to undo: NOT_FOUND for a comment that is not there, to `me`.
            match self.store.comment(comment_id).await? {
                Some(comment) if !self.hidden(me, &comment).await? => {}
                _ => return Err(Error::NotFound("comment").into()),
            }
        }
        Ok(Response::new(()))
    }

    async fn list_post_likes(
        &self,
        request: Request<ListPostLikesRequest>,
    ) -> Result<Response<ListPostLikesResponse>, Status> {
        let r = request.get_ref();
        let (post, page) = PageRequest::for_owner("post-likes", ("post_id", &r.post_id), r)?;
        let likes = self.store.post_likes(post, &page).await?;
        let (mut likes, next_page_token) = page.finish(likes, |l| l.sort_key);
        // To a reader the post's author blocks, it has no likes; nor do likers who block
        // the reader show (the page may come short).
        let viewer = social_kit::auth::optional_caller(&request);
        let people: Vec<ObjectId> =
            likes.iter().flat_map(|l| [l.user_id, l.target_author_id]).collect();
        let hidden = self.store.blocks.hidden_from(viewer, &people).await?;
        likes.retain(|l| !hidden.contains(&l.user_id) && !hidden.contains(&l.target_author_id));
        Ok(Response::new(ListPostLikesResponse {
            likes: likes.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn create_comment(
        &self,
        request: Request<CreateCommentRequest>,
    ) -> Result<Response<Comment>, Status> {
        let me = caller(&request)?;
        let key = validate::idempotency_key(&request)?;
        let r = request.into_inner();
        let mut v = Violations::default();
        let post = v.take("post_id", validate::object_id(&r.post_id));
        let text = content::text("content", &r.content, &mut v);
        let media = content::media("media", &r.media, &mut v);
        content::require_something("content", &text, &media, &mut v);
        v.finish()?;
        let post = post.unwrap_or_default();
        let post_author = self.post_author(post).await?;
        self.refuse_blocked(me, &[post_author], "post").await?;
        let mut comment = CommentDoc::new(post, post_author, me, text, media);
        comment.request_key = key.map(|k| format!("{me}:{k}"));
        let event = new_envelope(
            me,
            Payload::CommentCreated(CommentCreated {
                comment_id: comment.id.to_hex(),
                post_id: post.to_hex(),
                post_author_id: post_author.to_hex(),
                author_id: me.to_hex(),
                content: comment.content.clone(),
            }),
        );
        // Tests: a block made between the checks before and the insert.
        social_kit::pause!("engagement::before_comment_insert");
        let comment = match self.store.insert_comment(&comment, &event).await? {
            // A retry: the comment its first try stored, while it stands (checked again:
            // the first try may have stopped before its checks).
            Some(earlier) if earlier.state != crate::store::ACTIVE => {
                return Err(Error::NotFound("comment").into());
            }
            Some(earlier) => earlier,
            None => {
                self.relay.wake();
                comment
            }
        };
        refuse(checks::comment(&self.store, &self.relay, &self.graph, &comment).await?)?;
        Ok(Response::new(comment.into()))
    }

    async fn get_comment(
        &self,
        request: Request<GetCommentRequest>,
    ) -> Result<Response<Comment>, Status> {
        let comment_id = id("id", &request.get_ref().id)?;
        let comment = self.store.comment(comment_id).await?.ok_or(Error::NotFound("comment"))?;
        let mut visible = vec![comment];
        self.hide_blocked(&request, &mut visible).await?;
        let comment = visible.pop().ok_or(Error::NotFound("comment"))?;
        Ok(Response::new(comment.into()))
    }

    async fn update_comment(
        &self,
        request: Request<UpdateCommentRequest>,
    ) -> Result<Response<Comment>, Status> {
        let me = caller(&request)?;
        let r = request.into_inner();
        let comment = r.comment.ok_or_else(|| Error::invalid("comment", "is required"))?;
        let comment_id = id("comment.id", &comment.id)?;
        let current = self.store.comment(comment_id).await?.ok_or(Error::NotFound("comment"))?;
        if current.user_id != me {
            let why = "only the author can change a comment";
            return Err(self.not_yours(me, &current, why).await.into());
        }
        self.refuse_blocked(me, &[current.post_author_id], "post").await?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = content::update(
            "comment",
            &comment.content,
            &comment.media,
            &paths,
            (&current.content, &current.media),
        )?;
        let Some(updated) = self.store.update_comment(comment_id, update).await? else {
            // Deleted meanwhile, or a concurrent change left nothing the update keeps.
            return Err(match self.store.comment(comment_id).await? {
                Some(_) => content::BodyUpdate::emptied("comment"),
                None => Error::NotFound("comment"),
            }
            .into());
        };
        Ok(Response::new(updated.into()))
    }

    async fn delete_comment(
        &self,
        request: Request<DeleteCommentRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let comment_id = id("id", &request.get_ref().id)?;
        let comment = self.store.comment(comment_id).await?.ok_or(Error::NotFound("comment"))?;
        if comment.user_id != me && comment.post_author_id != me {
            let why = "only the comment's or the post's author can delete it";
            return Err(self.not_yours(me, &comment, why).await.into());
        }
        if !self.store.undo_comment(&comment, me).await? {
            return Err(Error::NotFound("comment").into());
        }
        self.relay.wake();
        Ok(Response::new(()))
    }

    async fn remove_comment(
        &self,
        request: Request<RemoveCommentRequest>,
    ) -> Result<Response<()>, Status> {
        let comment_id = id("id", &request.get_ref().id)?;
        let Some(comment) = self.store.comment(comment_id).await? else {
            return Ok(Response::new(())); // gone already
        };
        if self.store.undo_comment(&comment, comment.user_id).await? {
            self.relay.wake();
            let moderator = &request.get_ref().moderator_id;
            tracing::info!(comment_id = %comment_id, author = %comment.user_id, %moderator, "comment removed by a moderator");
        }
        Ok(Response::new(()))
    }

    async fn list_comments(
        &self,
        request: Request<ListCommentsRequest>,
    ) -> Result<Response<ListCommentsResponse>, Status> {
        let r = request.get_ref();
        let (post, page) = PageRequest::for_owner("comments", ("post_id", &r.post_id), r)?;
        let comments = self.store.comments_of(post, &page).await?;
        let (mut comments, next_page_token) = page.finish(comments, |c| c.sort_key);
        // Filtered after the page is cut: a page may come short, never skip one.
        self.hide_blocked(&request, &mut comments).await?;
        Ok(Response::new(ListCommentsResponse {
            comments: comments.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn count_post_engagement(
        &self,
        request: Request<CountPostEngagementRequest>,
    ) -> Result<Response<CountPostEngagementResponse>, Status> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let ids = validate::id_batch("post_ids", &r.post_ids, &mut v);
        v.finish()?;
        let as_of = social_kit::time::as_of_ms(r.as_of.as_ref());
        let mut counts = Vec::with_capacity(ids.len());
        for post in ids {
            let (likes_count, comments_count) = tokio::try_join!(
                self.store.count_likes(post, as_of),
                self.store.count_comments(post, as_of)
            )?;
            counts.push(PostEngagementCounts {
                post_id: post.to_hex(),
                likes_count,
                comments_count,
            });
        }
        Ok(Response::new(CountPostEngagementResponse { counts }))
    }

    type ExportUserEngagementStream =
        futures::stream::BoxStream<'static, Result<EngagementRecord, Status>>;

    async fn export_user_engagement(
        &self,
        request: Request<ExportUserEngagementRequest>,
    ) -> Result<Response<Self::ExportUserEngagementStream>, Status> {
        use futures::StreamExt;
        use social_proto::engagement::v1::engagement_record::Record;
        let user = id("user_id", &request.get_ref().user_id)?;
        let (likes, comments) = (self.store.clone(), self.store.clone());
        let likes = social_kit::export::paged(move |after| {
            let store = likes.clone();
            async move {
                let page = store.page_of_likes(user, after).await?;
                Ok(page
                    .into_iter()
                    .map(|l| {
                        let record = Record::Like(Like::from(l.clone()));
                        (l.sort_key, EngagementRecord { record: Some(record) })
                    })
                    .collect())
            }
        });
        let comments = social_kit::export::paged(move |after| {
            let store = comments.clone();
            async move {
                let page = store.page_of_comments(user, after).await?;
                Ok(page
                    .into_iter()
                    .map(|c| {
                        let key = c.sort_key;
                        let record = Record::Comment(Comment::from(c));
                        (key, EngagementRecord { record: Some(record) })
                    })
                    .collect())
            }
        });
        Ok(Response::new(likes.chain(comments).boxed()))
    }
}
