//! The delivery guarantee of a live stream: it delivers everything stored while it is
//! open, or ends so that the client resyncs; and the resume rule of docs/events.md
//! misses nothing.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bson::oid::ObjectId;
use social_proto::notification::v1::{
    ListNotificationsRequest, Notification, StreamNotificationsRequest,
    notification_service_client::NotificationServiceClient,
};
use social_testkit::{
    Answer, Meters, PASSWORD, Stack, StackOptions, TcpProxy, authed, broker, eventually,
    start_notification, token_for,
};
use tonic::{Code, transport::Channel};

use crate::{
    App, WAIT,
    groups::{liked, unliked},
    next, open_stream,
};

/// A notification replica of `app`'s stack whose broker connection goes through `proxy`.
async fn replica_through(app: &App, proxy: &TcpProxy) -> social_testkit::Running {
    let mut events = app.stack.events.clone();
    events.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    start_notification(&app.stack.database, &events, app.stack.user.addr, false, WAIT).await
}

/// `notification.streams.open` as of now (0 before any stream).
fn open_streams(meters: &Meters) -> i64 {
    let points = meters.points("notification.streams.open");
    points.iter().map(|(_, open)| *open as i64).sum()
}

#[tokio::test]
async fn a_replica_serves_streams_only_while_it_hears_the_broadcasts() {
    // The open-streams gauge is read at the end of each step.
    let meters = Meters::install();
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = TcpProxy::start(rabbit).await;
    proxy.cut().await;
    let replica = replica_through(&app, &proxy).await;
    let mut client = NotificationServiceClient::new(replica.channel().await);
    // No broker: the replica would miss broadcasts, so it opens no stream.
    let err = client
        .stream_notifications(authed(StreamNotificationsRequest::default(), &bob))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(open_streams(&meters), 0, "a refused stream is not open");

    // Once it hears them, streams open; when it loses them, they end with UNAVAILABLE.
    proxy.restore();
    let mut stream = open_stream(&mut client, &bob).await;
    assert_eq!(open_streams(&meters), 1);
    proxy.cut().await;
    let ended = tokio::time::timeout(WAIT, stream.message()).await.expect("the stream ended");
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);
    // The server let go of it: no longer counted.
    let closed = eventually(WAIT, || async { (open_streams(&meters) == 0).then_some(()) }).await;
    assert!(closed.is_some(), "an ended stream is still counted open");
}

#[tokio::test]
async fn a_retry_pushes_what_an_earlier_try_stored() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let mut client = app.notifications.clone();
    let mut stream = open_stream(&mut client, &bob).await;
    // The first try stores the notification, then fails before pushing it.
    fail::cfg("notification::before_broadcast", "1*return").unwrap();
    app.follow(&token_for(ObjectId::new()), &bob_id).await;
    let pushed = next(&mut stream, WAIT).await.expect("the retry pushed it");
    assert_eq!(pushed.user_id, bob_id);
    assert_eq!(app.wait_for(&bob, 1).await[0].id, pushed.id);
    assert_eq!(
        social_kit::faults::fired("notification::before_broadcast"),
        1,
        "the first try did not fail after storing"
    );
}

#[tokio::test]
async fn deleting_a_post_pushes_the_removal_of_its_notifications() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let post = app.post(&bob, "short-lived").await;
    let mut client = app.notifications.clone();
    let mut stream = open_stream(&mut client, &bob).await;
    app.like(&token_for(ObjectId::new()), &post.id).await;
    let like = next(&mut stream, WAIT).await.expect("the like");
    assert!(!like.removed);
    app.stack.delete_post(&bob, &post.id).await;
    let removal = next(&mut stream, WAIT).await.expect("the removal");
    assert!(removal.removed);
    assert_eq!(removal.id, like.id);
    // The removal is pushed before the documents go (a failure in between pushes it
    // again), so the list empties just after.
    let emptied = eventually(WAIT, || async { app.list(&bob).await.is_empty().then_some(()) });
    assert!(emptied.await.is_some(), "the list kept the deleted post's like");
}

/// What a client has: notifications by id.
type Have = HashMap<String, Notification>;

/// The documented resume rule: after reopening the stream, page ListNotifications from
/// the top until notifications created more than 60 s before the newest one already had,
/// merging by id.
async fn resume(client: &mut NotificationServiceClient<Channel>, token: &str, have: &mut Have) {
    let newest = have
        .values()
        .filter_map(|n| n.created_at)
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .max()
        .unwrap_or(i64::MIN);
    let mut page_token = String::new();
    loop {
        let page = client
            .list_notifications(authed(
                ListNotificationsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .answer();
        for n in page.notifications {
            let t = n.created_at.map_or(0, |t| t.seconds * 1000);
            if t < newest - 60_000 {
                return;
            }
            have.insert(n.id.clone(), n);
        }
        if page.next_page_token.is_empty() {
            return;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_client_following_the_resume_rule_misses_nothing_when_pushes_come_out_of_order() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let (first, second) = (app.post(&bob, "one").await, app.post(&bob, "two").await);
    let mut client = app.notifications.clone();
    let mut have = Have::new();
    let mut stream = open_stream(&mut client, &bob).await;

    // A's handler stores its notification, then takes long to push it; B's, stored
    // later (a higher key), is pushed first.
    let delay = format!("return({}:2500)", first.id);
    fail::cfg("notification::delay_broadcast", &delay).unwrap();
    app.like(&token_for(ObjectId::new()), &first.id).await;
    app.wait_for(&bob, 1).await;
    app.like(&token_for(ObjectId::new()), &second.id).await;
    let b = next(&mut stream, WAIT).await.expect("B is pushed");
    assert_eq!(b.post_id.as_deref(), Some(second.id.as_str()));
    have.insert(b.id.clone(), b);
    // The stream is cut before A is pushed.
    drop(stream);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut stream = open_stream(&mut client, &bob).await;
    resume(&mut client, &bob, &mut have).await;
    assert_eq!(have.len(), 2, "A and B, each once: {have:#?}");
    // And the stream goes on from there.
    app.like(&token_for(ObjectId::new()), &first.id).await;
    let c = next(&mut stream, WAIT).await.expect("C is pushed");
    assert!(!have.contains_key(&c.id));
}

#[tokio::test]
async fn a_deleted_accounts_streams_end() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let mut client = app.notifications.clone();
    let mut stream = open_stream(&mut client, &bob).await;
    app.stack.delete_account(&bob, PASSWORD).await.unwrap();
    let ended = tokio::time::timeout(WAIT, stream.message()).await.expect("the stream ended");
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
}

/// The race: a like's handler counted its notification (present), then an unlike
/// handled meanwhile removed it and pushed the removal, then the like's push went out.
/// The push carries a version below the removal's, so a client keeping the greater
/// drops it (the gateway does, see `stream.rs`).
#[tokio::test]
async fn a_likes_push_that_comes_after_its_unlikes_removal_is_older_than_it() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let (ann, post) = (ObjectId::new(), ObjectId::new());
    let mut client = app.notifications.clone();
    let mut stream = open_stream(&mut client, &bob).await;
    const POINT: &str = "notification::delay_publish";
    fail::cfg(POINT, &format!("return({post}:2000)")).unwrap();
    app.publish(&[liked(ann, post, &bob_id)]).await;
    let held =
        eventually(WAIT, || async { (social_kit::faults::fired(POINT) > 0).then_some(()) }).await;
    assert!(held.is_some(), "the like's push was not held");
    let listed = app.list(&bob).await;
    assert_eq!(listed.len(), 1, "the like is stored: {listed:#?}");
    app.publish(&[unliked(ann, post, &bob_id)]).await;
    let removal = next(&mut stream, WAIT).await.expect("the unlike's removal");
    assert!(removal.removed, "{removal:?}");
    let push = next(&mut stream, WAIT).await.expect("the like's late push");
    fail::remove(POINT);
    assert!(!push.removed && push.id == removal.id, "{push:?}");
    assert_eq!(push.version, listed[0].version, "lists and streams agree");
    assert!(
        push.version < removal.version,
        "the late push ({}) is not older than the removal ({})",
        push.version,
        removal.version
    );
    assert!(app.list(&bob).await.is_empty(), "the unlike removed it");
}

/// A duplicate of an event that arrives long after the original (a redelivery, a
/// replayed dead letter) moves nothing: the notification keeps its place and time, and
/// is not pushed again.
#[tokio::test]
async fn a_duplicate_a_minute_late_moves_nothing_and_pushes_nothing() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let mut client = app.notifications.clone();
    let mut stream = open_stream(&mut client, &bob).await;
    let like = liked(ObjectId::new(), ObjectId::new(), &bob_id);
    app.publish(std::slice::from_ref(&like)).await;
    let pushed = next(&mut stream, WAIT).await.expect("the like's push");
    // A minute passes (its keys are made a minute old).
    let minute_ago = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 60_000);
    let key = social_kit::paging::sort_key(minute_ago);
    let notifications = app.stack.database().await.collection::<bson::Document>("notifications");
    let id = ObjectId::parse_str(&pushed.id).unwrap();
    notifications
        .update_one(
            bson::doc! { "_id": id },
            bson::doc! { "$set": { "sort_key": key, "created_at": minute_ago } },
        )
        .await
        .unwrap();

    app.publish(&[like]).await;
    app.drained().await;
    assert!(
        next(&mut stream, Duration::from_secs(2)).await.is_none(),
        "the duplicate was pushed again"
    );
    let listed = app.list(&bob).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let at = listed[0].created_at.unwrap();
    assert_eq!(
        at.seconds * 1000 + i64::from(at.nanos) / 1_000_000,
        minute_ago.timestamp_millis(),
        "the duplicate moved it"
    );
}

/// A notification stored by an event that then failed for good (dead-lettered before
/// it was counted or pushed) is counted into its group and pushed by the sweep.
#[tokio::test]
async fn a_notification_whose_event_dead_lettered_is_grouped_and_pushed() {
    let stack = Stack::start_with(StackOptions {
        notification_stray_after: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .await;
    let app = App { notifications: stack.notifications().await, stack };
    let (bob_id, bob) = app.stack.register("bob").await;
    let mut client = app.notifications.clone();
    let mut stream = open_stream(&mut client, &bob).await;
    fail::cfg("notification::before_broadcast", "return(for good)").unwrap();
    app.publish(&[liked(ObjectId::new(), ObjectId::new(), &bob_id)]).await;
    let config = &app.stack.events;
    let dlq = config.dead_letter_queue("notification");
    let dead =
        eventually(WAIT, || async { (broker::queue_depth(config, &dlq).await == 1).then_some(()) })
            .await;
    fail::remove("notification::before_broadcast");
    assert!(dead.is_some(), "the like never reached {dlq}");
    let pushed = next(&mut stream, WAIT).await.expect("the sweep pushed it");
    assert_eq!(pushed.user_id, bob_id);
    assert!(!pushed.removed);
    let grouped = eventually(WAIT, || async {
        let groups = app.groups(&bob).await;
        (groups.len() == 1 && groups[0].notifications_count == 1).then_some(groups)
    })
    .await;
    assert!(grouped.is_some(), "the sweep did not count it into a group");
    // Pushed once: a later sweep finds nothing to push.
    assert!(next(&mut stream, Duration::from_secs(2)).await.is_none());
}
