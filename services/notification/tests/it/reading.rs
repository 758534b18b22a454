//! Lists, counts and read state: each account sees and changes only its own.

use super::*;
use social_testkit::{Answer, Refused};

#[tokio::test]
async fn lists_counts_and_read_state_are_the_callers_own() {
    let app = App::start().await;
    let [(bob_id, bob), (carol_id, carol)] = app.stack.register_all(["bob", "carol"]).await;
    let post = app.post(&bob, "p").await;
    for _ in 0..5 {
        app.follow(&token_for(ObjectId::new()), &bob_id).await;
    }
    for _ in 0..3 {
        app.like(&token_for(ObjectId::new()), &post.id).await;
    }
    app.follow(&bob, &carol_id).await;
    let all = app.wait_for(&bob, 8).await;
    app.wait_for(&carol, 1).await;
    // Newest first.
    let times: Vec<_> = all.iter().map(|n| n.created_at.unwrap()).collect();
    assert!(times.windows(2).all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)));

    let mut n = app.notifications.clone();
    let counter = n.clone();
    let unread = |token: &str| {
        let mut n = counter.clone();
        let token = token.to_owned();
        async move { n.get_unread_count(authed(GetUnreadCountRequest {}, &token)).await.answer().count }
    };
    assert_eq!(unread(&bob).await, 8);

    let likes = n
        .list_notifications(authed(
            ListNotificationsRequest {
                types: vec![NotificationType::PostLike as i32],
                ..Default::default()
            },
            &bob,
        ))
        .await
        .answer()
        .notifications;
    assert_eq!(likes.len(), 3);

    // Marking: carol's id among bob's changes nothing of carol's.
    let carols = app.list(&carol).await;
    let ids = vec![all[0].id.clone(), all[1].id.clone(), carols[0].id.clone()];
    let changed = n
        .mark_notifications_read(authed(MarkNotificationsReadRequest { ids: ids.clone() }, &bob))
        .await
        .answer()
        .updated_count;
    assert_eq!(changed, 2);
    let again = n
        .mark_notifications_read(authed(MarkNotificationsReadRequest { ids }, &bob))
        .await
        .answer()
        .updated_count;
    assert_eq!(again, 0);
    assert_eq!(unread(&bob).await, 6);
    assert_eq!(unread(&carol).await, 1);

    // Unread only, in pages of four, stable.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = n
            .list_notifications(authed(
                ListNotificationsRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    unread_only: true,
                    types: vec![],
                },
                &bob,
            ))
            .await
            .answer();
        seen.extend(page.notifications.into_iter().map(|x| x.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<_> = all[2..].iter().map(|x| x.id.clone()).collect();
    assert_eq!(seen, expected);

    let all_read = n
        .mark_all_notifications_read(authed(MarkAllNotificationsReadRequest {}, &bob))
        .await
        .answer()
        .updated_count;
    assert_eq!(all_read, 6);
    assert_eq!(unread(&bob).await, 0);
    assert!(app.list(&bob).await.iter().all(|x| x.is_read));

    // Errors.
    n.get_unread_count(GetUnreadCountRequest {}).await.refused(Code::Unauthenticated);
    let err = n
        .list_notifications(authed(
            ListNotificationsRequest { types: vec![0, 42], ..Default::default() },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["types[0]", "types[1]"]);
    // A flood of types is one violation, not one per type.
    let err = n
        .list_notifications(authed(
            ListNotificationsRequest { types: vec![42; 1000], ..Default::default() },
            &bob,
        ))
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["types"]);
    let err = n
        .mark_notifications_read(authed(MarkNotificationsReadRequest { ids: vec![] }, &bob))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids"]);
    // A page token from one filter does not fit another.
    let first = n
        .list_notifications(authed(
            ListNotificationsRequest { page_size: 2, ..Default::default() },
            &bob,
        ))
        .await
        .answer();
    let err = n
        .list_notifications(authed(
            ListNotificationsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                unread_only: true,
                types: vec![],
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

/// An unread count reads at most 1,000 (a client shows "999+"): its cost does not grow
/// with what others made unread (every @mention notifies).
#[tokio::test]
async fn unread_counts_stop_at_a_thousand() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    let bob_id = ObjectId::parse_str(&bob_id).unwrap();
    let db = app.stack.database().await;
    let unread = |i: i64| {
        bson::doc! {
            "_id": ObjectId::new(), "user_id": bob_id, "is_read": false,
            "dedupe_key": format!("test:{i}"), "sort_key": i,
        }
    };
    let docs: Vec<bson::Document> = (0..1_001).map(unread).collect();
    db.collection::<bson::Document>("notifications").insert_many(docs).await.unwrap();
    let group = |_: i64| {
        let id = ObjectId::new();
        bson::doc! { "_id": id, "user_id": bob_id, "group_key": id.to_hex(), "unread": 1_i64, "count": 1_i64 }
    };
    let groups: Vec<bson::Document> = (0..1_001).map(group).collect();
    db.collection::<bson::Document>("notification_groups").insert_many(groups).await.unwrap();
    let mut n = app.notifications.clone();
    let all = n.get_unread_count(authed(GetUnreadCountRequest {}, &bob)).await.answer().count;
    let request = authed(social_proto::notification::v1::GetUnreadGroupCountRequest {}, &bob);
    let groups = n.get_unread_group_count(request).await.answer().count;
    assert_eq!((all, groups), (1_000, 1_000));
}
