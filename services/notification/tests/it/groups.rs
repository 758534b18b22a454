//! Grouped notifications: which ones group, their counts through likes, unlikes,
//! deletions and redeliveries, two replicas writing one group, pages that stay stable,
//! marking read, and live group updates.

use std::time::Duration;

use bson::oid::ObjectId;
use prost::Message;
use social_events::{
    Envelope, Payload, new_envelope,
    pb::{
        CommentDeleted, CommentLiked, PostDeleted, PostLiked, PostUnliked, UserFollowed, UserMuted,
    },
};
use social_proto::notification::v1::{
    GetUnreadCountRequest, GetUnreadGroupCountRequest, ListNotificationGroupsRequest,
    MarkAllNotificationsReadRequest, MarkGroupReadRequest, MarkNotificationsReadRequest,
    NotificationGroup, NotificationType, StreamNotificationsRequest,
};
use social_testkit::{Answer, PASSWORD, Refused, authed, broker, eventually};
use tonic::Code;

use crate::{App, WAIT};

/// A like of `post` (by `author`) from `liker`, as the engagement service publishes it.
pub(crate) fn liked(liker: ObjectId, post: ObjectId, author: &str) -> Envelope {
    new_envelope(
        liker,
        Payload::PostLiked(PostLiked {
            post_id: post.to_hex(),
            post_author_id: author.into(),
            user_id: liker.to_hex(),
        }),
    )
}

/// `muter` muting the notifications of `muted`, as the social-graph service publishes it.
fn muted(muter: &str, muted: ObjectId) -> Envelope {
    let mute = UserMuted {
        mute_id: ObjectId::new().to_hex(),
        muter_id: muter.into(),
        muted_id: muted.to_hex(),
        notifications: true,
        expires_at_ms: 0,
    };
    new_envelope(ObjectId::parse_str(muter).unwrap(), Payload::UserMuted(mute))
}

pub(crate) fn unliked(liker: ObjectId, post: ObjectId, author: &str) -> Envelope {
    new_envelope(
        liker,
        Payload::PostUnliked(PostUnliked {
            post_id: post.to_hex(),
            post_author_id: author.into(),
            user_id: liker.to_hex(),
        }),
    )
}

impl App {
    pub(crate) async fn publish(&self, events: &[Envelope]) {
        for e in events {
            let key = social_events::routing_key(e.payload.as_ref().unwrap());
            broker::publish_raw(&self.stack.events, key, &e.encode_to_vec(), &e.event_id).await;
        }
    }

    pub(crate) async fn groups(&self, token: &str) -> Vec<NotificationGroup> {
        self.group_page(token, 100, "").await.0
    }

    async fn group_page(
        &self,
        token: &str,
        size: i32,
        page: &str,
    ) -> (Vec<NotificationGroup>, String) {
        let r = self
            .notifications
            .clone()
            .list_notification_groups(authed(
                ListNotificationGroupsRequest {
                    page_size: size,
                    page_token: page.into(),
                    unread_only: false,
                },
                token,
            ))
            .await
            .answer();
        (r.groups, r.next_page_token)
    }

    /// Waits until `check` holds for `token`'s groups; returns them.
    pub(crate) async fn groups_until(
        &self,
        token: &str,
        check: impl Fn(&[NotificationGroup]) -> bool,
    ) -> Vec<NotificationGroup> {
        let got = eventually(WAIT, || async {
            let groups = self.groups(token).await;
            check(&groups).then_some(groups)
        })
        .await;
        match got {
            Some(g) => g,
            None => panic!("never matched: {:#?}", self.groups(token).await),
        }
    }

    async fn unread(&self, token: &str) -> (i64, i64) {
        let mut n = self.notifications.clone();
        let all = n.get_unread_count(authed(GetUnreadCountRequest {}, token)).await.answer().count;
        let groups = n
            .get_unread_group_count(authed(GetUnreadGroupCountRequest {}, token))
            .await
            .answer()
            .count;
        (all, groups)
    }
}

fn of<'a>(
    groups: &'a [NotificationGroup],
    kind: NotificationType,
    target: Option<&str>,
) -> Option<&'a NotificationGroup> {
    groups.iter().find(|g| {
        g.r#type == kind as i32
            && (target.is_none()
                || g.post_id.as_deref() == target
                || g.comment_id.as_deref() == target)
    })
}

#[tokio::test]
async fn likes_and_follows_group_by_target_and_comments_and_mentions_stand_alone() {
    let app = App::start().await;
    let [(bob_id, bob), (_, carol)] = app.stack.register_all(["bob", "carol"]).await;
    let (a, b) = (ObjectId::new(), ObjectId::new());
    let likers: Vec<ObjectId> = (0..7).map(|_| ObjectId::new()).collect();
    let mut events = Vec::new();
    for liker in &likers {
        events.push(liked(*liker, a, &bob_id));
    }
    events.push(liked(likers[0], b, &bob_id));
    events.push(liked(likers[1], b, &bob_id));
    for follower in &likers[..3] {
        events.push(new_envelope(
            *follower,
            Payload::UserFollowed(UserFollowed {
                follower_id: follower.to_hex(),
                followee_id: bob_id.clone(),
            }),
        ));
    }
    // Likes of bob's comments: two of one, one of another.
    let (c1, c2) = (ObjectId::new(), ObjectId::new());
    for (liker, comment) in [(likers[0], c1), (likers[1], c1), (likers[2], c2)] {
        events.push(new_envelope(
            liker,
            Payload::CommentLiked(CommentLiked {
                comment_id: comment.to_hex(),
                post_id: a.to_hex(),
                comment_author_id: bob_id.clone(),
                user_id: liker.to_hex(),
            }),
        ));
    }
    app.publish(&events).await;
    // A comment on bob's post mentioning bob: two groups of one.
    let post = app.post(&bob, "a post").await;
    app.stack.comment(&carol, &post.id, "nice, @bob").await.unwrap();

    let groups = app.groups_until(&bob, |g| g.len() == 7).await;
    let on_a = of(&groups, NotificationType::PostLike, Some(&a.to_hex())).unwrap();
    assert_eq!(on_a.notifications_count, 7);
    assert_eq!(on_a.unread_count, 7);
    assert_eq!(on_a.sample_account_ids.len(), 5, "a handful of actors");
    let distinct: std::collections::HashSet<_> = on_a.sample_account_ids.iter().collect();
    assert_eq!(distinct.len(), 5);
    assert_eq!(
        of(&groups, NotificationType::PostLike, Some(&b.to_hex())).unwrap().notifications_count,
        2
    );
    let on_c1 = of(&groups, NotificationType::CommentLike, Some(&c1.to_hex())).unwrap();
    assert_eq!(on_c1.notifications_count, 2);
    assert_eq!(on_c1.post_id, Some(a.to_hex()), "with the comment's post");
    let on_c2 = of(&groups, NotificationType::CommentLike, Some(&c2.to_hex())).unwrap();
    assert_eq!(on_c2.notifications_count, 1);
    let follows = of(&groups, NotificationType::Follow, None).unwrap();
    assert_eq!(follows.notifications_count, 3);
    let comment = of(&groups, NotificationType::PostComment, None).unwrap();
    let mention = of(&groups, NotificationType::Mention, None).unwrap();
    assert_eq!((comment.notifications_count, mention.notifications_count), (1, 1));
    assert_ne!(comment.group_key, mention.group_key);
    // Newest activity first: the comment and mention came last.
    let newest: Vec<i32> = groups[..2].iter().map(|g| g.r#type).collect();
    assert!(newest.contains(&(NotificationType::Mention as i32)), "{groups:#?}");
    assert_eq!(app.unread(&bob).await, (17, 7));
    // Every notification says its group.
    let listed = app.list(&bob).await;
    assert!(listed.iter().all(|n| groups.iter().any(|g| g.group_key == n.group_key)));
}

#[tokio::test]
async fn counts_follow_unlikes_relikes_deletions_and_redeliveries() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let post = ObjectId::new();
    let (x, y) = (ObjectId::new(), ObjectId::new());
    // Redelivered: the same event three times counts once.
    let first = liked(x, post, &bob_id);
    app.publish(&[first.clone(), first.clone(), first]).await;
    app.publish(&[liked(y, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 2).await;
    // y unlikes, likes again, unlikes again; the unlike redelivered late.
    let undo = unliked(y, post, &bob_id);
    app.publish(std::slice::from_ref(&undo)).await;
    // Who unliked is no longer shown (the count changes first, then the actors).
    app.groups_until(&bob, |g| {
        g.len() == 1 && g[0].notifications_count == 1 && g[0].sample_account_ids == [x.to_hex()]
    })
    .await;
    app.publish(&[liked(y, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 2).await;
    app.publish(&[undo]).await; // the old unlike again: it came before the new like
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.drained().await;
    let groups = app.groups(&bob).await;
    assert_eq!(groups[0].notifications_count, 2, "{groups:#?}");
    assert_eq!(groups[0].unread_count, 2);
    // A late like from before an unlike is not stored.
    let z = ObjectId::new();
    let early = liked(z, post, &bob_id);
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.publish(&[unliked(z, post, &bob_id), early]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.drained().await;
    assert_eq!(app.groups(&bob).await[0].notifications_count, 2);
    // The post is deleted: its group goes.
    app.publish(&[new_envelope(
        ObjectId::parse_str(&bob_id).unwrap(),
        Payload::PostDeleted(PostDeleted { post_id: post.to_hex(), author_id: bob_id.clone() }),
    )])
    .await;
    app.groups_until(&bob, <[NotificationGroup]>::is_empty).await;
    assert_eq!(app.unread(&bob).await, (0, 0));
}

/// A copy of a like that comes after its liker was muted finds the notification the
/// first one stored, counted and pushed: the notification goes as any removal does, out
/// of its group's counts too, never deleted behind its group's back (a group counting a
/// notification that is gone).
#[tokio::test]
async fn a_copy_of_a_like_after_its_liker_is_muted_takes_its_notification_out_of_its_group() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (liker, post) = (ObjectId::new(), ObjectId::new());
    let like = liked(liker, post, &bob_id);
    app.publish(std::slice::from_ref(&like)).await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 1).await;
    app.publish(&[muted(&bob_id, liker)]).await;
    app.drained().await;
    app.publish(&[like]).await;
    app.groups_until(&bob, <[NotificationGroup]>::is_empty).await;
    assert_eq!(app.unread(&bob).await, (0, 0));
}

/// A deleted post takes all its groups, however many (a group per comment): deleted in
/// batches, in steps a handler's time allows.
#[tokio::test]
async fn a_deleted_post_takes_more_groups_than_a_batch_holds() {
    let app = App::start().await;
    let (bob_id, _) = app.stack.register("bob").await;
    let (bob, post) = (ObjectId::parse_str(&bob_id).unwrap(), ObjectId::new());
    let group = |_| {
        let (id, comment) = (ObjectId::new(), ObjectId::new());
        bson::doc! {
            "_id": id, "user_id": bob, "group_key": format!("post_comment:{comment}"),
            "post_id": post, "comment_id": comment, "count": 1_i64, "unread": 1_i64,
        }
    };
    let groups: Vec<bson::Document> = (0..450).map(group).collect();
    let db = app.stack.database().await;
    db.collection::<bson::Document>("notification_groups").insert_many(groups).await.unwrap();
    let deleted = PostDeleted { post_id: post.to_hex(), author_id: bob_id.clone() };
    app.publish(&[new_envelope(bob, Payload::PostDeleted(deleted))]).await;
    let of_post = || bson::doc! { "post_id": social_kit::mongo::equals_id(post) };
    let gone = eventually(WAIT, || async {
        (app.stack.count("notification_groups", of_post()).await == 0).then_some(())
    });
    assert!(
        gone.await.is_some(),
        "left: {}",
        app.stack.count("notification_groups", of_post()).await
    );
}

/// A group whose notifications are all taken back goes to the bottom of its recipient's
/// list range (the list's pages do not walk it), and comes back to its place with the
/// next notification counted into it.
#[tokio::test]
async fn an_emptied_group_leaves_the_lists_way_and_comes_back_with_its_next_notification() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (liker, post) = (ObjectId::new(), ObjectId::new());
    app.publish(&[liked(liker, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.len() == 1).await;
    app.publish(&[unliked(liker, post, &bob_id)]).await;
    app.groups_until(&bob, <[NotificationGroup]>::is_empty).await;
    let of_bob = bson::doc! { "user_id": social_kit::mongo::equals_id(ObjectId::parse_str(&bob_id).unwrap()) };
    let groups = app.stack.database().await.collection::<bson::Document>("notification_groups");
    let place = || async {
        let group = groups.find_one(of_bob.clone()).await.unwrap().unwrap();
        // The stand-in gives a small number back as a 32-bit one.
        let key = group.get("sort_key").unwrap();
        key.as_i64().or(key.as_i32().map(i64::from)).unwrap()
    };
    let emptied = eventually(WAIT, || async { (place().await == 0).then_some(()) });
    assert!(emptied.await.is_some(), "the emptied group stays at {}", place().await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.publish(&[liked(liker, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 1).await;
    assert!(place().await > 0);
}

/// A like by an actor its recipient mutes stores nothing the recipient hears of: no
/// notification, no group, and no removal either (a removal would tell the recipient's
/// clients to reload; a muted actor liking and unliking would make them reload at will).
#[tokio::test]
async fn a_muted_actors_like_is_dropped_silently() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (liker, post) = (ObjectId::new(), ObjectId::new());
    app.publish(&[muted(&bob_id, liker)]).await;
    app.drained().await;
    app.publish(&[liked(liker, post, &bob_id)]).await;
    app.drained().await;
    let page = app
        .notifications
        .clone()
        .list_notifications(authed(
            social_proto::notification::v1::ListNotificationsRequest::default(),
            &bob,
        ))
        .await
        .answer();
    assert!(page.notifications.is_empty());
    assert_eq!(page.last_removal_at, None, "a removal was recorded");
    assert!(app.groups(&bob).await.is_empty());
}

#[tokio::test]
async fn a_deleted_comment_takes_its_group_and_a_deleted_actor_leaves_the_counts() {
    let app = App::start().await;
    let [(bob_id, bob), (_, carol)] = app.stack.register_all(["bob", "carol"]).await;
    let post = app.post(&bob, "hello").await;
    let comment = app.stack.comment(&carol, &post.id, "hi").await.unwrap();
    app.groups_until(&bob, |g| g.len() == 1).await;
    app.publish(&[new_envelope(
        ObjectId::new(),
        Payload::CommentDeleted(CommentDeleted {
            comment_id: comment.id.clone(),
            post_id: post.id.clone(),
            post_author_id: bob_id.clone(),
            author_id: comment.user_id.clone(),
        }),
    )])
    .await;
    app.groups_until(&bob, <[NotificationGroup]>::is_empty).await;

    // Dave likes, then deletes his account: out of the group's count and actors.
    let (dave_id, dave) = app.stack.register("dave").await;
    let (erin_id, _) = (ObjectId::new(), ());
    let target = ObjectId::new();
    app.publish(&[
        liked(ObjectId::parse_str(&dave_id).unwrap(), target, &bob_id),
        liked(erin_id, target, &bob_id),
    ])
    .await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 2).await;
    app.stack.delete_account(&dave, PASSWORD).await.unwrap();
    let groups = app
        .groups_until(&bob, |g| {
            g.len() == 1
                && g[0].notifications_count == 1
                && g[0].sample_account_ids == [erin_id.to_hex()]
        })
        .await;
    assert_eq!(groups[0].unread_count, 1);
}

#[tokio::test]
async fn two_replicas_storing_into_one_group_count_every_like_once() {
    let app = App::start().await;
    let _second = app.stack.notification_replica(true).await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let post = ObjectId::new();
    let likes: Vec<Envelope> = (0..30).map(|_| liked(ObjectId::new(), post, &bob_id)).collect();
    // Each twice, so that both replicas also handle copies of one event at once.
    let messages: Vec<(Vec<u8>, String)> =
        likes.iter().chain(likes.iter()).map(|e| (e.encode_to_vec(), e.event_id.clone())).collect();
    broker::publish_all(&app.stack.events, "engagement.post.liked", &messages).await;
    let groups = app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 30).await;
    app.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let groups_after = app.groups(&bob).await;
    assert_eq!(groups_after[0].notifications_count, 30);
    assert_eq!(groups_after[0].unread_count, 30);
    // The head saw every write: its latest is the newest notification.
    let newest = &app.list(&bob).await[0];
    assert_eq!(groups_after[0].most_recent_notification_id, newest.id, "{groups:#?}");
    assert_eq!(groups_after[0].sample_account_ids[0], newest.source_user_id);
}

#[tokio::test]
async fn pages_of_groups_stay_stable_while_activity_arrives() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let posts: Vec<ObjectId> = (0..5).map(|_| ObjectId::new()).collect();
    for p in &posts {
        app.publish(&[liked(ObjectId::new(), *p, &bob_id)]).await;
        app.groups_until(&bob, |g| g.iter().any(|g| g.post_id == Some(p.to_hex()))).await;
    }
    let (first, token) = app.group_page(&bob, 2, "").await;
    assert_eq!(first.len(), 2);
    // The oldest group (on a later page) gets a like: it moves to the top.
    app.publish(&[liked(ObjectId::new(), posts[0], &bob_id)]).await;
    app.groups_until(&bob, |g| g[0].post_id == Some(posts[0].to_hex())).await;
    let mut seen: Vec<String> = first.iter().map(|g| g.group_key.clone()).collect();
    let mut token = token;
    while !token.is_empty() {
        let (page, next) = app.group_page(&bob, 2, &token).await;
        seen.extend(page.iter().map(|g| g.group_key.clone()));
        token = next;
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a group twice: {seen:?}");
    assert_eq!(seen.len(), 4, "the moved group is at the top, above where we read");
}

#[tokio::test]
async fn marking_a_group_read_moves_both_unread_counts() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (a, b) = (ObjectId::new(), ObjectId::new());
    app.publish(&[
        liked(ObjectId::new(), a, &bob_id),
        liked(ObjectId::new(), a, &bob_id),
        liked(ObjectId::new(), a, &bob_id),
        liked(ObjectId::new(), b, &bob_id),
    ])
    .await;
    let groups = app
        .groups_until(&bob, |g| {
            g.len() == 2 && g.iter().map(|g| g.notifications_count).sum::<i64>() == 4
        })
        .await;
    assert_eq!(app.unread(&bob).await, (4, 2));
    let on_a = of(&groups, NotificationType::PostLike, Some(&a.to_hex())).unwrap();
    let mut n = app.notifications.clone();
    let r = n
        .mark_group_read(authed(MarkGroupReadRequest { group_key: on_a.group_key.clone() }, &bob))
        .await
        .answer();
    assert_eq!(r.updated_count, 3);
    assert_eq!(app.unread(&bob).await, (1, 1));
    let groups = app.groups(&bob).await;
    assert_eq!(of(&groups, NotificationType::PostLike, Some(&a.to_hex())).unwrap().unread_count, 0);
    // New activity in the group is unread again.
    app.publish(&[liked(ObjectId::new(), a, &bob_id)]).await;
    app.groups_until(&bob, |g| {
        of(g, NotificationType::PostLike, Some(&a.to_hex())).is_some_and(|g| g.unread_count == 1)
    })
    .await;
    assert_eq!(app.unread(&bob).await, (2, 2));
    // Reading one notification counts in its group.
    let one = app
        .list(&bob)
        .await
        .into_iter()
        .find(|x| !x.is_read && x.post_id == Some(b.to_hex()))
        .unwrap();
    n.mark_notifications_read(authed(
        MarkNotificationsReadRequest { ids: vec![one.id.clone()] },
        &bob,
    ))
    .await
    .unwrap();
    n.mark_notifications_read(authed(MarkNotificationsReadRequest { ids: vec![one.id] }, &bob))
        .await
        .unwrap();
    assert_eq!(app.unread(&bob).await, (1, 1));
    n.mark_all_notifications_read(authed(MarkAllNotificationsReadRequest {}, &bob)).await.unwrap();
    assert_eq!(app.unread(&bob).await, (0, 0));
    assert!(app.groups(&bob).await.iter().all(|g| g.unread_count == 0));
    // Not one of bob's groups: NOT_FOUND; no key: INVALID_ARGUMENT.
    let (_, carol) = app.stack.register("carol").await;
    n.mark_group_read(authed(MarkGroupReadRequest { group_key: on_a.group_key.clone() }, &carol))
        .await
        .refused(Code::NotFound);
    n.mark_group_read(authed(MarkGroupReadRequest { group_key: " ".into() }, &carol))
        .await
        .refused(Code::InvalidArgument);
}

/// What a stream with groups brought.
#[derive(Default)]
struct Seen {
    /// The group's update with the greatest version: (version, count).
    latest: (i64, i64),
    notes: usize,
    removals: usize,
}

#[tokio::test]
async fn a_stream_that_asks_for_groups_gets_their_updates() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let mut client = app.notifications.clone();
    let mut stream = {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match client
                .stream_notifications(authed(
                    StreamNotificationsRequest { include_groups: true },
                    &bob,
                ))
                .await
            {
                Ok(s) => break s.into_inner(),
                Err(s)
                    if s.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("{s}"),
            }
        }
    };
    let post = ObjectId::new();
    let (ann, cid) = (ObjectId::new(), ObjectId::new());
    app.publish(&[liked(ann, post, &bob_id)]).await;
    app.publish(&[liked(cid, post, &bob_id)]).await;
    let mut seen = Seen::default();
    let until = async |seen: &mut Seen, stream: &mut tonic::Streaming<_>, stop: i64| {
        while seen.latest.1 != stop || seen.latest.0 == 0 {
            let m: social_proto::notification::v1::Notification =
                tokio::time::timeout(WAIT, stream.message())
                    .await
                    .expect("a group update in time")
                    .unwrap()
                    .unwrap();
            match m.group {
                Some(g) => {
                    assert_eq!(g.post_id, Some(post.to_hex()));
                    assert_eq!(g.user_id, bob_id);
                    assert_ne!(g.version, seen.latest.0, "a change bumps the version");
                    seen.latest = seen.latest.max((g.version, g.notifications_count));
                }
                None if m.removed => seen.removals += 1,
                None => {
                    assert!(!m.group_key.is_empty());
                    seen.notes += 1;
                }
            }
        }
    };
    until(&mut seen, &mut stream, 2).await;
    // One like taken back: the group counts one.
    app.publish(&[unliked(cid, post, &bob_id)]).await;
    until(&mut seen, &mut stream, 1).await;
    // The post deleted: the group is gone (a count of zero).
    app.publish(&[new_envelope(
        ObjectId::parse_str(&bob_id).unwrap(),
        Payload::PostDeleted(PostDeleted { post_id: post.to_hex(), author_id: bob_id.clone() }),
    )])
    .await;
    until(&mut seen, &mut stream, 0).await;
    assert_eq!(seen.notes, 2, "the notifications themselves still come");
    assert_eq!(seen.removals, 2, "and so do their removals");
    assert_eq!(seen.latest, (i64::MAX, 0), "a gone group has the last word");
}

/// Holds the likes of `post` between their storing and their counting for `ms`, runs
/// `meanwhile` once the like of `liker` is stored, then waits for the like's handler.
async fn while_counting<F: std::future::Future<Output = ()>>(
    app: &App,
    bob: &str,
    bob_id: &str,
    (liker, post): (ObjectId, ObjectId),
    meanwhile: impl FnOnce(String) -> F,
) {
    const MS: u64 = 1500;
    const POINT: &str = "notification::delay_broadcast";
    let delayed_before = social_kit::faults::fired(POINT);
    fail::cfg(POINT, &format!("return({post}:{MS})")).unwrap();
    app.publish(&[liked(liker, post, bob_id)]).await;
    let stored = eventually(WAIT, || async {
        app.list(bob).await.into_iter().find(|n| n.post_id.as_deref() == Some(&post.to_hex()))
    })
    .await
    .expect("the like stored");
    // The like's handler is held, so what follows happens between storing and counting.
    let held = eventually(WAIT, || async {
        (social_kit::faults::fired(POINT) > delayed_before).then_some(())
    })
    .await;
    assert!(held.is_some(), "the like's handler was not held");
    meanwhile(stored.id).await;
    tokio::time::sleep(Duration::from_millis(MS + 300)).await;
    app.drained().await;
    fail::remove(POINT);
}

#[tokio::test]
async fn what_happens_between_storing_a_like_and_counting_it_is_counted_right() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let ann = ObjectId::new();

    // Unliked meanwhile: no group counts it.
    let post = ObjectId::new();
    while_counting(&app, &bob, &bob_id, (ann, post), |_| async {
        app.publish(&[unliked(ann, post, &bob_id)]).await;
        let gone = eventually(WAIT, || async { app.list(&bob).await.is_empty().then_some(()) });
        assert!(gone.await.is_some(), "the unlike removed it");
    })
    .await;
    // The held handler may still be finishing on a loaded machine: the counts settle.
    app.groups_until(&bob, <[_]>::is_empty).await;
    assert_eq!(app.unread(&bob).await, (0, 0));

    // Read meanwhile (before its group existed): not counted unread.
    let post = ObjectId::new();
    while_counting(&app, &bob, &bob_id, (ann, post), |id| async {
        app.notifications
            .clone()
            .mark_notifications_read(authed(MarkNotificationsReadRequest { ids: vec![id] }, &bob))
            .await
            .unwrap();
    })
    .await;
    let groups = app.groups(&bob).await;
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].notifications_count, groups[0].unread_count), (1, 0));
    assert_eq!(app.unread(&bob).await, (0, 0));

    // All read meanwhile (its group unread-free until then): not counted unread.
    let post = ObjectId::new();
    while_counting(&app, &bob, &bob_id, (ann, post), |_| async {
        app.notifications
            .clone()
            .mark_all_notifications_read(authed(MarkAllNotificationsReadRequest {}, &bob))
            .await
            .unwrap();
    })
    .await;
    assert_eq!(app.unread(&bob).await, (0, 0));
    assert!(app.groups(&bob).await.iter().all(|g| g.unread_count == 0));

    // Its actor's account deleted meanwhile: no group counts it.
    let (dave_id, dave) = app.stack.register("dave").await;
    let dave_id = ObjectId::parse_str(&dave_id).unwrap();
    let post = ObjectId::new();
    while_counting(&app, &bob, &bob_id, (dave_id, post), |_| async {
        app.stack.delete_account(&dave, PASSWORD).await.unwrap();
        let gone = eventually(WAIT, || async {
            let left = app.list(&bob).await;
            (!left.iter().any(|n| n.source_user_id == dave_id.to_hex())).then_some(())
        });
        assert!(gone.await.is_some(), "the deletion removed it");
    })
    .await;
    let groups = app.groups(&bob).await;
    assert!(groups.iter().all(|g| g.post_id != Some(post.to_hex())), "{groups:#?}");
    assert_eq!(groups.len(), 2, "the two read ones: {groups:#?}");
}

#[tokio::test]
async fn a_like_that_failed_before_it_was_counted_then_was_taken_back_counts_nothing() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let post = ObjectId::new();
    let (ann, cid) = (ObjectId::new(), ObjectId::new());
    app.publish(&[liked(cid, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 1).await;
    // Ann's like is stored, then its handler fails before counting it, again and again
    // (the broker is away), while her unlike is handled.
    fail::cfg("notification::before_broadcast", "return").unwrap();
    app.publish(&[liked(ann, post, &bob_id)]).await;
    let stored = eventually(WAIT, || async { (app.list(&bob).await.len() == 2).then_some(()) });
    assert!(stored.await.is_some(), "ann's like stored");
    app.publish(&[unliked(ann, post, &bob_id)]).await;
    let gone = eventually(WAIT, || async { (app.list(&bob).await.len() == 1).then_some(()) });
    assert!(gone.await.is_some(), "ann's like taken back");
    // The broker is back: the like's retry finds it taken back.
    fail::remove("notification::before_broadcast");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.drained().await;
    let groups = app.groups(&bob).await;
    assert_eq!(groups.len(), 1, "carol's like still counts: {groups:#?}");
    assert_eq!((groups[0].notifications_count, groups[0].unread_count), (1, 1), "{groups:#?}");
    assert_eq!(groups[0].sample_account_ids, [cid.to_hex()]);
    assert_eq!(app.unread(&bob).await, (1, 1));
}

#[tokio::test]
async fn notifications_stored_before_groups_existed_are_grouped_by_the_command() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let bob_oid = ObjectId::parse_str(&bob_id).unwrap();
    let post = ObjectId::new();
    // Two likes of one post and a follow as an earlier release stored them: no
    // group_key, no count_key; one of the likes read.
    let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&app.stack.database);
    let now = bson::DateTime::now();
    let legacy = |n: i64, kind: &str, post: Option<ObjectId>, read: bool| {
        let t = bson::DateTime::from_millis(now.timestamp_millis() - 1000 + n);
        let mut d = bson::doc! {
            "_id": ObjectId::new(), "user_id": bob_oid, "type": kind,
            "source_user_id": ObjectId::new(), "is_read": read, "created_at": t,
            "sort_key": social_kit::paging::sort_key(t), "dedupe_key": format!("legacy:{n}"),
            "event_id": format!("legacy-{n}"),
        };
        if let Some(p) = post {
            d.insert("post_id", p);
        }
        d
    };
    db.collection::<bson::Document>("notifications")
        .insert_many([
            legacy(1, "POST_LIKE", Some(post), false),
            legacy(2, "POST_LIKE", Some(post), true),
            legacy(3, "FOLLOW", None, false),
        ])
        .await
        .unwrap();
    assert_eq!(app.groups(&bob).await, [], "not grouped yet");
    let config = social_notification::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        social_testkit::peer(
            "user service",
            &format!("http://{}", app.stack.user.addr),
            Duration::from_secs(2),
        ),
        app.stack.events.clone(),
    );
    assert_eq!(social_notification::group_existing(&config).await.unwrap(), 3);
    // Again: nothing left to group, nothing counted twice.
    assert_eq!(social_notification::group_existing(&config).await.unwrap(), 0);
    let groups = app.groups(&bob).await;
    assert_eq!(groups.len(), 2, "{groups:#?}");
    let likes = of(&groups, NotificationType::PostLike, Some(&post.to_hex())).unwrap();
    assert_eq!((likes.notifications_count, likes.unread_count), (2, 1));
    assert_eq!(likes.sample_account_ids.len(), 2);
    assert_eq!(app.unread(&bob).await, (2, 2));
    assert!(app.list(&bob).await.iter().all(|n| !n.group_key.is_empty()));
    // A new like of the same post joins the same group.
    app.publish(&[liked(ObjectId::new(), post, &bob_id)]).await;
    app.groups_until(&bob, |g| {
        of(g, NotificationType::PostLike, None).is_some_and(|l| l.notifications_count == 3)
    })
    .await;
}

#[tokio::test]
async fn a_group_counts_right_when_its_notifications_are_read_and_unliked_a_month_later() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let post = ObjectId::new();
    let (ann, cid) = (ObjectId::new(), ObjectId::new());
    app.publish(&[liked(ann, post, &bob_id), liked(cid, post, &bob_id)]).await;
    app.groups_until(&bob, |g| {
        g.len() == 1 && (g[0].notifications_count, g[0].unread_count) == (2, 2)
    })
    .await;
    app.drained().await;
    // A month and more later: the counters' ledger is purged, and the group's own list
    // of recent changes has moved on (a popular post passes 500 changes in hours).
    let later =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 31 * 86_400_000);
    app.stack.expire_as_of(later).await;
    let db = app.stack.database().await;
    assert_eq!(
        app.stack.count("notification_groups_applied", bson::doc! {}).await,
        0,
        "the ledger is gone"
    );
    db.collection::<bson::Document>("notification_groups")
        .update_many(
            bson::doc! {},
            bson::doc! { "$set": { "applied_events": [], "applied_log": [] } },
        )
        .await
        .unwrap();
    // Ann's like is read, then taken back; cid's is taken back unread.
    let ann_note =
        app.list(&bob).await.into_iter().find(|n| n.source_user_id == ann.to_hex()).unwrap();
    app.notifications
        .clone()
        .mark_notifications_read(authed(
            MarkNotificationsReadRequest { ids: vec![ann_note.id] },
            &bob,
        ))
        .await
        .unwrap();
    let groups = app.groups(&bob).await;
    assert_eq!(
        (groups[0].notifications_count, groups[0].unread_count),
        (2, 1),
        "one read: {groups:#?}"
    );
    app.publish(&[unliked(ann, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.len() == 1 && g[0].notifications_count == 1).await;
    app.publish(&[unliked(cid, post, &bob_id)]).await;
    app.groups_until(&bob, |g| g.is_empty()).await;
    app.drained().await;
    assert_eq!(app.groups(&bob).await, [], "nothing counted twice");
    assert_eq!(app.unread(&bob).await, (0, 0));
}
