//! Sort keys: two follows minted with one key, and keys minted only under a leased slot.

use super::*;

/// Stores an active follow straight into `follows` through `insert_keyed` (as the
/// service does), minted with `key`; the document as stored.
async fn insert_follow(
    follows: &mongodb::Collection<bson::Document>,
    follower: ObjectId,
    followee: ObjectId,
    key: i64,
) -> bson::Document {
    let mut follow = bson::doc! {
        "_id": ObjectId::new(), "follower_id": follower, "followee_id": followee,
        "created_at": bson::DateTime::now(), "sort_key": key, "state": "active",
        "active_key": "active", "outbox": [], "outbox_pending": 0,
    };
    let owner = Some(("follower_id", follower));
    fn sort_key(d: &mut bson::Document) -> &mut i64 {
        match d.get_mut("sort_key") {
            Some(bson::Bson::Int64(k)) => k,
            _ => panic!("no sort key"),
        }
    }
    let inserted = social_kit::mongo::insert_keyed(follows, &mut follow, owner, sort_key);
    assert!(inserted.await.unwrap());
    follow
}

#[tokio::test]
async fn two_follows_of_one_follower_minted_with_one_sort_key_are_both_paged_exactly_once() {
    let app = spawn().await;
    let follows = app.stack.database().await.collection::<bson::Document>("followers");
    // Its per-follower unique index refuses the second key: a fresh one is drawn.
    let follower = ObjectId::new();
    let key = social_kit::paging::sort_key(bson::DateTime::now());
    let mut followees = HashSet::new();
    for _ in 0..2 {
        let (star, _) = app.user(&social_testkit::unique_name("star")).await;
        followees.insert(star.clone());
        insert_follow(&follows, follower, ObjectId::parse_str(&star).unwrap(), key).await;
    }
    // A page of one ends on the first: the second is on the next page, not skipped.
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let (page, next) = app.following(&follower.to_hex(), 1, &token).await;
        seen.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), followees);
}

#[tokio::test]
async fn keys_are_minted_under_a_leased_slot_and_a_replica_that_lost_it_stores_nothing_until_it_holds_another()
 {
    use social_kit::{mongo::slots::Slots, paging};
    let app = spawn().await;
    let db = app.stack.database().await;
    let leases = db.collection::<bson::Document>("sort_key_slots");
    let lease = leases.find_one(bson::doc! {}).await.unwrap().unwrap();
    // The stand-in gives small integers back as Int32.
    let slot = match lease.get("_id") {
        Some(bson::Bson::Int32(s)) => i64::from(*s),
        Some(bson::Bson::Int64(s)) => *s,
        other => panic!("no slot: {other:?}"),
    };
    assert!(lease.get_i64("expires_ms").unwrap() > bson::DateTime::now().timestamp_millis());
    let [(alice, alice_token), (bob, _)] = app.register_all(["alice", "bob"]).await;
    let minted_before = paging::sort_key(bson::DateTime::now());
    assert_eq!(paging::key_slot(minted_before), slot);
    // Another process took the slot over (as it may once the lease ran out, this
    // replica paused past it): the renewal finds out, and nothing is stored meanwhile.
    leases
        .update_one(
            bson::doc! { "_id": slot },
            bson::doc! { "$set": { "holder": "another process" } },
        )
        .await
        .unwrap();
    let slots = Slots::new(&social_kit::mongo::Db::new(db.clone()));
    assert!(!slots.renew().await.unwrap());
    let err = app.follow(&alice_token, &bob).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // It holds another; what it minted under the old one is minted again when stored.
    let now_held = slots.claim().await.unwrap();
    assert_ne!(now_held, slot);
    let follows = db.collection::<bson::Document>("followers");
    let alice = ObjectId::parse_str(&alice).unwrap();
    let follow = insert_follow(&follows, alice, ObjectId::new(), minted_before).await;
    assert_eq!(paging::key_slot(follow.get_i64("sort_key").unwrap()), now_held);
    app.follow(&alice_token, &bob).await.unwrap();
}
