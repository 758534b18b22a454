//! Posts, timelines, the home feed, likes and comments (the post and engagement
//! services). Lists carry each item's author, fetched with one batch call per page.

use axum::{Json, extract::State, http::StatusCode, response::Response};
use prost_types::FieldMask;
use social_proto::{
    engagement::v1::{
        Comment as WireComment, CreateCommentRequest, DeleteCommentRequest, GetCommentRequest,
        LikeCommentRequest, LikePostRequest, ListCommentsRequest, ListPostLikesRequest,
        UnlikeCommentRequest, UnlikePostRequest, UpdateCommentRequest,
    },
    post::v1::{
        CreatePostRequest, DeletePostRequest, GetPostRequest, ListHomeFeedRequest,
        ListUserPostsRequest, Post as WirePost, UpdatePostRequest,
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{
        AppState, Body, Identity, Listing, PageQuery, Path, SignedIn, accounts, ask, created,
    },
    error::{ApiError, ApiResult, ErrorBody},
    model::{BodyChange, Comment, CommentPage, Like, LikePage, Media, NewBody, Post, PostPage},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_post))
        .routes(routes!(get_post, change_post, delete_post))
        .routes(routes!(user_posts))
        .routes(routes!(feed))
        .routes(routes!(like_post, unlike_post))
        .routes(routes!(post_likes))
        .routes(routes!(comments, create_comment))
        .routes(routes!(get_comment, change_comment, delete_comment))
        .routes(routes!(like_comment, unlike_comment))
}

/// `posts` with their authors (one call for the page).
async fn with_authors(
    state: &AppState,
    who: &Identity,
    wire: Vec<WirePost>,
) -> ApiResult<Vec<Post>> {
    let authors = accounts(&state.services, who, wire.iter().map(|p| p.user_id.clone())).await?;
    Ok(wire
        .into_iter()
        .map(|p| {
            let author = authors.get(&p.user_id).cloned();
            Post { author, ..Post::from(p) }
        })
        .collect())
}

/// `comments` with their authors (one call for the page).
async fn comments_with_authors(
    state: &AppState,
    who: &Identity,
    wire: Vec<WireComment>,
) -> ApiResult<Vec<Comment>> {
    let authors = accounts(&state.services, who, wire.iter().map(|c| c.user_id.clone())).await?;
    Ok(wire
        .into_iter()
        .map(|c| {
            let author = authors.get(&c.user_id).cloned();
            Comment { author, ..Comment::from(c) }
        })
        .collect())
}

/// The update mask and values of a post's or comment's change.
fn body_change(
    change: BodyChange,
) -> ApiResult<(String, Vec<social_proto::common::v1::Media>, FieldMask)> {
    let mut paths = Vec::new();
    let content = change.content.inspect(|_| paths.push("content".to_owned()));
    let media = change.media.inspect(|_| paths.push("media".to_owned()));
    if paths.is_empty() {
        return Err(ApiError::invalid("body", "give content, media, or both"));
    }
    Ok((
        content.unwrap_or_default(),
        media.unwrap_or_default().into_iter().map(Media::into).collect(),
        FieldMask { paths },
    ))
}

/// Publishes a post: text, media (images, videos, gifs), or both.
#[utoipa::path(post, path = "/v1/posts", tag = "posts", request_body = NewBody,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = crate::idempotency::DESCRIPTION)), security(("bearer" = [])),
    responses((status = 201, body = Post), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the Idempotency-Key's first request still runs"),
        (status = 422, body = ErrorBody, description = "the Idempotency-Key was sent with another request")))]
async fn create_post(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Body(body): Body<NewBody>,
) -> ApiResult<Response> {
    let request = CreatePostRequest {
        content: body.content,
        media: body.media.into_iter().map(Into::into).collect(),
    };
    let post = ask!(state, who, posts.create_post(request))?;
    let location = format!("/v1/posts/{}", post.id);
    let post = with_authors(&state, &who, vec![post]).await?;
    Ok(created(location, post.into_iter().next()))
}

/// One post, with its author.
#[utoipa::path(get, path = "/v1/posts/{id}", tag = "posts", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    responses((status = 200, body = Post), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_post(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<Post>> {
    let post = ask!(state, who, posts.get_post(GetPostRequest { id }))?;
    let post = with_authors(&state, &who, vec![post]).await?;
    post.into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::new(tonic::Code::NotFound, "post not found"))
}

/// Changes the caller's post: the fields present.
#[utoipa::path(patch, path = "/v1/posts/{id}", tag = "posts", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    request_body = BodyChange, security(("bearer" = [])),
    responses((status = 200, body = Post), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn change_post(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
    Body(change): Body<BodyChange>,
) -> ApiResult<Json<Post>> {
    let (content, media, mask) = body_change(change)?;
    let request = UpdatePostRequest {
        post: Some(WirePost { id, content, media, ..Default::default() }),
        update_mask: Some(mask),
    };
    let post = ask!(state, who, posts.update_post(request))?;
    Ok(Json(Post::from(post)))
}

/// Deletes the caller's post (its comments, likes and notifications follow).
#[utoipa::path(delete, path = "/v1/posts/{id}", tag = "posts", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_post(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    ask!(state, who, posts.delete_post(DeletePostRequest { id }))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's posts, newest first, with their author.
#[utoipa::path(get, path = "/v1/users/{id}/posts", tag = "posts",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$"), PageQuery),
    responses((status = 200, body = PostPage), (status = 400, body = ErrorBody)))]
async fn user_posts(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    mut list: Listing,
) -> ApiResult<Response> {
    let request = ListUserPostsRequest { user_id: id, ..list.request() };
    let r = ask!(state, who, posts.list_user_posts(request))?;
    let items = with_authors(&state, &who, r.posts).await?;
    Ok(list.answer(PostPage::of(items, r.next_page_token)))
}

/// The caller's home feed: the posts of the accounts they follow and their own, newest
/// first, each with its author.
#[utoipa::path(get, path = "/v1/feed", tag = "posts", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = PostPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn feed(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
) -> ApiResult<Response> {
    let request: ListHomeFeedRequest = list.request();
    let r = ask!(state, who, posts.list_home_feed(request))?;
    let items = with_authors(&state, &who, r.posts).await?;
    Ok(list.answer(PostPage::of(items, r.next_page_token)))
}

/// Likes a post (again: nothing changes).
#[utoipa::path(put, path = "/v1/posts/{id}/like", tag = "likes", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn like_post(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = LikePostRequest { post_id: id };
    ask!(state, who, engagement.like_post(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a like of a post back (none: nothing changes).
#[utoipa::path(delete, path = "/v1/posts/{id}/like", tag = "likes", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unlike_post(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = UnlikePostRequest { post_id: id };
    ask!(state, who, engagement.unlike_post(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who liked a post, newest first.
#[utoipa::path(get, path = "/v1/posts/{id}/likes", tag = "likes",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$"), PageQuery),
    responses((status = 200, body = LikePage), (status = 400, body = ErrorBody)))]
async fn post_likes(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    mut list: Listing,
) -> ApiResult<Response> {
    let request = ListPostLikesRequest { post_id: id, ..list.request() };
    let r = ask!(state, who, engagement.list_post_likes(request))?;
    let likers = accounts(&state.services, &who, r.likes.iter().map(|l| l.user_id.clone())).await?;
    let items = r
        .likes
        .into_iter()
        .map(|l| {
            let account = likers.get(&l.user_id).cloned();
            Like { account, ..Like::from(l) }
        })
        .collect();
    Ok(list.answer(LikePage::of(items, r.next_page_token)))
}

/// A post's comments, oldest first, each with its author.
#[utoipa::path(get, path = "/v1/posts/{id}/comments", tag = "comments",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$"), PageQuery),
    responses((status = 200, body = CommentPage), (status = 400, body = ErrorBody)))]
async fn comments(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    mut list: Listing,
) -> ApiResult<Response> {
    let request = ListCommentsRequest { post_id: id, ..list.request() };
    let r = ask!(state, who, engagement.list_comments(request))?;
    let items = comments_with_authors(&state, &who, r.comments).await?;
    Ok(list.answer(CommentPage::of(items, r.next_page_token)))
}

/// Comments on a post: text, media, or both; `@username` mentions notify.
#[utoipa::path(post, path = "/v1/posts/{id}/comments", tag = "comments",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$"), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = crate::idempotency::DESCRIPTION)),
    request_body = NewBody, security(("bearer" = [])),
    responses((status = 201, body = Comment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the Idempotency-Key's first request still runs"),
        (status = 422, body = ErrorBody, description = "the Idempotency-Key was sent with another request")))]
async fn create_comment(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
    Body(body): Body<NewBody>,
) -> ApiResult<Response> {
    let request = CreateCommentRequest {
        post_id: id,
        content: body.content,
        media: body.media.into_iter().map(Into::into).collect(),
    };
    let comment = ask!(state, who, engagement.create_comment(request))?;
    let location = format!("/v1/comments/{}", comment.id);
    let comment = comments_with_authors(&state, &who, vec![comment]).await?;
    Ok(created(location, comment.into_iter().next()))
}

/// One comment, with its author.
#[utoipa::path(get, path = "/v1/comments/{id}", tag = "comments",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    responses((status = 200, body = Comment), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_comment(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<Comment>> {
    let c = ask!(state, who, engagement.get_comment(GetCommentRequest { id }))?;
    let comment = comments_with_authors(&state, &who, vec![c]).await?;
    comment
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::new(tonic::Code::NotFound, "comment not found"))
}

/// Changes the caller's comment: the fields present.
#[utoipa::path(patch, path = "/v1/comments/{id}", tag = "comments",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")), request_body = BodyChange, security(("bearer" = [])),
    responses((status = 200, body = Comment), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn change_comment(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
    Body(change): Body<BodyChange>,
) -> ApiResult<Json<Comment>> {
    let (content, media, mask) = body_change(change)?;
    let request = UpdateCommentRequest {
        comment: Some(WireComment { id, content, media, ..Default::default() }),
        update_mask: Some(mask),
    };
    let c = ask!(state, who, engagement.update_comment(request))?;
    Ok(Json(Comment::from(c)))
}

/// Deletes a comment (its author or the post's author may).
#[utoipa::path(delete, path = "/v1/comments/{id}", tag = "comments",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_comment(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = DeleteCommentRequest { id };
    ask!(state, who, engagement.delete_comment(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Likes a comment (again: nothing changes).
#[utoipa::path(put, path = "/v1/comments/{id}/like", tag = "likes",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn like_comment(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = LikeCommentRequest { comment_id: id };
    ask!(state, who, engagement.like_comment(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a like of a comment back.
#[utoipa::path(delete, path = "/v1/comments/{id}/like", tag = "likes",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unlike_comment(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = UnlikeCommentRequest { comment_id: id };
    ask!(state, who, engagement.unlike_comment(request))?;
    Ok(StatusCode::NO_CONTENT)
}
