//! `social.post.v1.PostService`: request → validated value → store → response.

use bson::{Bson, DateTime, Document, oid::ObjectId};
use social_kit::{
    Error, Result,
    auth::caller,
    client::Peer,
    content::{self, MediaDoc},
    error::Violations,
    paging::PageRequest,
    time::to_timestamp,
    validate,
};
use social_proto::{
    graph::v1::{ListFollowingIdsRequest, social_graph_service_client::SocialGraphServiceClient},
    post::v1::{
        BatchGetPostsRequest, BatchGetPostsResponse, CreatePostRequest, DeletePostRequest,
        GetPostRequest, ListHomeFeedRequest, ListHomeFeedResponse, ListUserPostsRequest,
        ListUserPostsResponse, Post, UpdatePostRequest, post_service_server::PostService,
    },
};
use tonic::{Request, Response, Status};

use crate::store::{PostDoc, Store};

pub struct Api {
    store: Store,
    graph: Peer,
}

impl Api {
    pub fn new(store: Store, graph: Peer) -> Self {
        Self { store, graph }
    }

    /// The accounts `reader` follows, from the social-graph service.
    async fn following(&self, reader: ObjectId) -> Result<Vec<ObjectId>> {
        let mut client = SocialGraphServiceClient::new(self.graph.channel());
        let request = self.graph.request(ListFollowingIdsRequest {
            user_id: reader.to_hex(),
            limit: 0,
        });
        let answer = self
            .graph
            .call(client.list_following_ids(request))
            .await
            .map_err(|s| self.graph.error(s))?;
        if answer.truncated {
            tracing::warn!(reader = %reader, "follows more accounts than the feed reads; using the most recent follows");
        }
        answer
            .user_ids
            .iter()
            .map(|id| ObjectId::parse_str(id).map_err(Error::internal))
            .collect()
    }
}

impl From<PostDoc> for Post {
    fn from(p: PostDoc) -> Self {
        Self {
            id: p.id.to_hex(),
            user_id: p.user_id.to_hex(),
            content: p.content,
            media: p.media.into_iter().map(Into::into).collect(),
            likes_count: p.likes_count,
            comments_count: p.comments_count,
            created_at: Some(to_timestamp(p.created_at)),
            updated_at: Some(to_timestamp(p.updated_at)),
        }
    }
}

fn id(field: &str, value: &str) -> Result<ObjectId> {
    validate::object_id(value).map_err(|d| Error::invalid(field, d))
}

fn media_bson(media: &[MediaDoc]) -> Result<Bson> {
    bson::serialize_to_bson(media).map_err(Error::internal)
}

/// What an UpdatePost changes, validated against the post as it is.
fn post_update(post: &Post, paths: &[String], current: &PostDoc) -> Result<Document> {
    let mut v = Violations::default();
    let paths: Vec<&str> = if paths.is_empty() {
        // AIP-134: no mask means every field the request populates.
        let mut p = Vec::new();
        if !post.content.is_empty() {
            p.push("content");
        }
        if !post.media.is_empty() {
            p.push("media");
        }
        p
    } else if paths.iter().any(|p| p == "*") {
        vec!["content", "media"]
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let (mut text, mut media) = (current.content.clone(), current.media.clone());
    let mut set = Document::new();
    for path in paths {
        match path {
            "content" => {
                text = content::text("post.content", &post.content, &mut v);
                set.insert("content", text.clone());
            }
            "media" => {
                media = content::media("post.media", &post.media, &mut v);
                set.insert("media", media_bson(&media)?);
            }
            other => v.add(
                "update_mask.paths",
                format!("`{other}` cannot be updated; use content or media"),
            ),
        }
    }
    content::require_something("post.content", &text, &media, &mut v);
    v.finish()?;
    Ok(set)
}

#[tonic::async_trait]
impl PostService for Api {
    async fn create_post(
        &self,
        request: Request<CreatePostRequest>,
    ) -> Result<Response<Post>, Status> {
        let me = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::default();
        let text = content::text("content", &r.content, &mut v);
        let media = content::media("media", &r.media, &mut v);
        content::require_something("content", &text, &media, &mut v);
        v.finish()?;
        let now = DateTime::now();
        let post = PostDoc {
            id: ObjectId::new(),
            user_id: me,
            content: text,
            media,
            likes_count: 0,
            comments_count: 0,
            created_at: now,
            updated_at: now,
        };
        self.store.insert(&post).await?;
        tracing::info!(post_id = %post.id, author = %me, "post created");
        Ok(Response::new(post.into()))
    }

    async fn get_post(&self, request: Request<GetPostRequest>) -> Result<Response<Post>, Status> {
        let post_id = id("id", &request.get_ref().id)?;
        let post = self
            .store
            .get(post_id)
            .await?
            .ok_or(Error::NotFound("post"))?;
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
        let post = r
            .post
            .ok_or_else(|| Error::invalid("post", "is required"))?;
        let post_id = id("post.id", &post.id)?;
        let current = self
            .store
            .get(post_id)
            .await?
            .ok_or(Error::NotFound("post"))?;
        if current.user_id != me {
            return Err(Error::PermissionDenied("only the author can change a post").into());
        }
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let set = post_update(&post, &paths, &current)?;
        let updated = self
            .store
            .update(post_id, me, set)
            .await?
            .ok_or(Error::NotFound("post"))?;
        Ok(Response::new(updated.into()))
    }

    async fn delete_post(
        &self,
        request: Request<DeletePostRequest>,
    ) -> Result<Response<()>, Status> {
        let me = caller(&request)?;
        let post_id = id("id", &request.get_ref().id)?;
        let current = self
            .store
            .get(post_id)
            .await?
            .ok_or(Error::NotFound("post"))?;
        if current.user_id != me {
            return Err(Error::PermissionDenied("only the author can delete a post").into());
        }
        self.store
            .delete(post_id, me)
            .await?
            .ok_or(Error::NotFound("post"))?;
        tracing::info!(post_id = %post_id, author = %me, "post deleted");
        Ok(Response::new(()))
    }

    async fn list_user_posts(
        &self,
        request: Request<ListUserPostsRequest>,
    ) -> Result<Response<ListUserPostsResponse>, Status> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let user = v.take("user_id", validate::object_id(&r.user_id));
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            format!("user-posts:{}", r.user_id),
            &mut v,
        );
        v.finish()?;
        let docs = self
            .store
            .by_authors(&[user.unwrap_or_default()], &page)
            .await?;
        let (docs, next_page_token) = page.finish(docs, |p| (p.created_at, p.id));
        Ok(Response::new(ListUserPostsResponse {
            posts: docs.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn list_home_feed(
        &self,
        request: Request<ListHomeFeedRequest>,
    ) -> Result<Response<ListHomeFeedResponse>, Status> {
        let me = caller(&request)?;
        let r = request.get_ref();
        let page = PageRequest::parse_alone(r.page_size, &r.page_token, format!("home-feed:{me}"))?;
        let mut authors = self.following(me).await?;
        authors.push(me);
        let docs = self.store.by_authors(&authors, &page).await?;
        let (docs, next_page_token) = page.finish(docs, |p| (p.created_at, p.id));
        Ok(Response::new(ListHomeFeedResponse {
            posts: docs.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
