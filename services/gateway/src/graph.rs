//! Follows and blocks (the social-graph service). Lists carry the other account of each
//! follow or block, fetched with one batch call per page.

use axum::{Json, extract::State, http::StatusCode, response::Response};
use social_proto::graph::v1::{
    BlockUserRequest, FollowRequest, GetRelationshipRequest, ListBlocksRequest,
    ListFollowersRequest, ListFollowingRequest, ListMutesRequest, MuteUserRequest,
    UnblockUserRequest, UnfollowRequest, UnmuteUserRequest,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    context::{AppState, Body, Identity, Listing, PageQuery, Path, SignedIn, accounts, ask},
    error::{ApiResult, ErrorBody},
    model::{Block, BlockPage, Follow, FollowPage, Mute, MutePage, MuteSettings, Relationship},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(follow, unfollow))
        .routes(routes!(followers))
        .routes(routes!(following))
        .routes(routes!(relationship))
        .routes(routes!(block))
        .routes(routes!(unblock))
        .routes(routes!(blocks))
        .routes(routes!(mute))
        .routes(routes!(unmute))
        .routes(routes!(mutes))
}

/// Follows a user (again: nothing changes).
#[utoipa::path(put, path = "/v1/users/{id}/follow", tag = "follows", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 200, body = Follow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn follow(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<Json<Follow>> {
    let request = FollowRequest { followee_id: id };
    let f = ask!(state, who, graph.follow(request))?;
    Ok(Json(f.into()))
}

/// Stops following a user (not following: nothing changes).
#[utoipa::path(delete, path = "/v1/users/{id}/follow", tag = "follows", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn unfollow(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = UnfollowRequest { followee_id: id };
    ask!(state, who, graph.unfollow(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `items` (of the wire type `W`), each as `T` with the account `id_of` names, fetched
/// in one call for the page.
async fn with_accounts<W, T: From<W>>(
    state: &AppState,
    who: &Identity,
    items: Vec<W>,
    id_of: impl Fn(&W) -> String,
    set: impl Fn(&mut T, Option<crate::model::Account>),
) -> ApiResult<Vec<T>> {
    let found = accounts(&state.services, who, items.iter().map(&id_of)).await?;
    Ok(items
        .into_iter()
        .map(|w| {
            let account = found.get(&id_of(&w)).cloned();
            let mut item = T::from(w);
            set(&mut item, account);
            item
        })
        .collect())
}

/// `follows` with the account on `side` of each (one call for the page).
async fn with_follow_accounts(
    state: &AppState,
    who: &Identity,
    follows: Vec<social_proto::graph::v1::Follow>,
    followers: bool,
) -> ApiResult<Vec<Follow>> {
    let other = move |f: &social_proto::graph::v1::Follow| {
        if followers { f.follower_id.clone() } else { f.followee_id.clone() }
    };
    with_accounts(state, who, follows, other, |f: &mut Follow, a| f.account = a).await
}

/// Who follows a user, newest first, without the accounts that block the caller (a page
/// may come short); none if the user does.
#[utoipa::path(get, path = "/v1/users/{id}/followers", tag = "follows",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$"), PageQuery),
    responses((status = 200, body = FollowPage), (status = 400, body = ErrorBody)))]
async fn followers(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    mut list: Listing,
) -> ApiResult<Response> {
    let request = ListFollowersRequest { user_id: id, ..list.request() };
    let r = ask!(state, who, graph.list_followers(request))?;
    let items = with_follow_accounts(&state, &who, r.follows, true).await?;
    Ok(list.answer(FollowPage::of(items, r.next_page_token)))
}

/// Whom a user follows, newest first, without the accounts that block the caller (a page
/// may come short); none if the user does.
#[utoipa::path(get, path = "/v1/users/{id}/following", tag = "follows",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$"), PageQuery),
    responses((status = 200, body = FollowPage), (status = 400, body = ErrorBody)))]
async fn following(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    mut list: Listing,
) -> ApiResult<Response> {
    let request = ListFollowingRequest { user_id: id, ..list.request() };
    let r = ask!(state, who, graph.list_following(request))?;
    let items = with_follow_accounts(&state, &who, r.follows, false).await?;
    Ok(list.answer(FollowPage::of(items, r.next_page_token)))
}

/// How the caller and a user stand: whether each follows the other.
#[utoipa::path(get, path = "/v1/users/{id}/relationship", tag = "follows",
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")), security(("bearer" = [])),
    responses((status = 200, body = Relationship), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn relationship(
    State(state): State<AppState>,
    SignedIn(who, me): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<Json<Relationship>> {
    let request = GetRelationshipRequest { user_id: me.user.to_hex(), other_user_id: id };
    let r = ask!(state, who, graph.get_relationship(request))?;
    Ok(Json(Relationship {
        following: r.following,
        followed_by: r.followed_by,
        blocking: r.blocking,
        blocked_by: r.blocked_by,
        muting: r.muting,
    }))
}

/// Blocks a user (again: nothing changes). Every follow between the two ends; neither
/// can follow the other; the user can no longer like or comment on the caller's posts
/// and comments, nor notify the caller; the caller's notifications from the user go;
/// and to the user, the caller's profile, posts and comments are absent. 400
/// (`INVALID_ARGUMENT`) for oneself; 404 for an unknown user.
#[utoipa::path(post, path = "/v1/users/{id}/block", tag = "blocks", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 200, body = Block), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn block(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<Json<Block>> {
    let request = BlockUserRequest { user_id: id };
    let b = ask!(state, who, graph.block_user(request))?;
    Ok(Json(b.into()))
}

/// Stops blocking a user (not blocking: nothing changes). Restores nothing by itself:
/// no follow comes back.
#[utoipa::path(post, path = "/v1/users/{id}/unblock", tag = "blocks", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn unblock(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = UnblockUserRequest { user_id: id };
    ask!(state, who, graph.unblock_user(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whom the caller blocks, newest block first, each with the blocked account.
#[utoipa::path(get, path = "/v1/blocks", tag = "blocks", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = BlockPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn blocks(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
) -> ApiResult<Response> {
    let request: ListBlocksRequest = list.request();
    let r = ask!(state, who, graph.list_blocks(request))?;
    let blocked = |b: &social_proto::graph::v1::Block| b.blocked_id.clone();
    let items =
        with_accounts(&state, &who, r.blocks, blocked, |b: &mut Block, a| b.account = a).await?;
    Ok(list.answer(BlockPage::of(items, r.next_page_token)))
}

/// Mutes a user (again: the new settings replace the old): its posts leave the caller's
/// home feed, and, unless `notifications` is false, what it does no longer notifies the
/// caller; for `duration_seconds` (0: until unmuted). The user notices nothing.
#[utoipa::path(post, path = "/v1/users/{id}/mute", tag = "mutes", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    request_body = MuteSettings, security(("bearer" = [])),
    responses((status = 200, body = Mute), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn mute(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
    Body(body): Body<MuteSettings>,
) -> ApiResult<Json<Mute>> {
    let request = MuteUserRequest {
        user_id: id,
        duration_seconds: body.duration_seconds,
        notifications: body.notifications,
    };
    let m = ask!(state, who, graph.mute_user(request))?;
    Ok(Json(m.into()))
}

/// Stops muting a user (not muting: nothing changes).
#[utoipa::path(post, path = "/v1/users/{id}/unmute", tag = "mutes", params(("id" = String, Path, pattern = "^[0-9a-f]{24}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn unmute(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = UnmuteUserRequest { user_id: id };
    ask!(state, who, graph.unmute_user(request))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whom the caller mutes, newest first, each with the muted account.
#[utoipa::path(get, path = "/v1/mutes", tag = "mutes", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = MutePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn mutes(
    State(state): State<AppState>,
    SignedIn(who, _): SignedIn,
    mut list: Listing,
) -> ApiResult<Response> {
    let request: ListMutesRequest = list.request();
    let r = ask!(state, who, graph.list_mutes(request))?;
    let muted = |m: &social_proto::graph::v1::Mute| m.muted_id.clone();
    let items =
        with_accounts(&state, &who, r.mutes, muted, |m: &mut Mute, a| m.account = a).await?;
    Ok(list.answer(MutePage::of(items, r.next_page_token)))
}
