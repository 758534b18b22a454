//! GetUser and BatchGetUsers read others' profiles through Redis (`social_kit::cache`):
//! warm reads send nothing to MongoDB's `users`, every change of a profile or its
//! counters is seen by the next read, and the cache holds the public profile alone.

use std::time::Duration;

use prost_types::FieldMask;
use social_proto::user::v1::{BatchGetUsersRequest, GetUserRequest, UpdateUserRequest, User};
use social_testkit::{PASSWORD, Refused, Stack, authed, eventually, queries};
use tonic::{Code, Status};

/// `id`'s profile as `token`'s account sees it.
async fn get(stack: &Stack, token: &str, id: &str) -> Result<User, Status> {
    let request = authed(GetUserRequest { id: id.into() }, token);
    Ok(stack.users().await.get_user(request).await?.into_inner())
}

/// `id`'s profile as BatchGetUsers answers `token`'s account.
async fn batch_get(stack: &Stack, token: &str, id: &str) -> Option<User> {
    let request = authed(BatchGetUsersRequest { ids: vec![id.into()] }, token);
    let answer = stack.users().await.batch_get_users(request).await;
    answer.unwrap().into_inner().users.pop()
}

#[tokio::test]
async fn a_profile_is_read_through_the_cache_and_every_change_is_seen_at_once() {
    let stack = Stack::start().await;
    let [(alice, alice_token), (bob, bob_token)] = stack.register_all(["alice", "bob"]).await;
    get(&stack, &bob_token, &alice).await.unwrap();
    get(&stack, &alice_token, &bob).await.unwrap();
    // Warm: neither GetUser nor BatchGetUsers reaches MongoDB's `users`.
    // (A round is read again if Redis took longer than its wait, as on a loaded machine:
    // then the reads go to MongoDB for a second, by design.)
    let by_id = || queries::sent("users", "find {_id:");
    let warm = eventually(Duration::from_secs(15), || async {
        let before = by_id();
        for _ in 0..3 {
            let seen = get(&stack, &bob_token, &alice).await.unwrap();
            assert_eq!((seen.username.as_str(), seen.email.as_str()), ("alice", ""));
        }
        assert!(batch_get(&stack, &bob_token, &alice).await.is_some());
        (by_id() == before).then_some(())
    })
    .await;
    assert!(warm.is_some(), "warm reads send nothing");
    // Her own view still has her email (read from MongoDB).
    let own = get(&stack, &alice_token, &alice).await.unwrap();
    assert_eq!(own.email, "alice@example.com");
    // Asking for herself among others: hers from MongoDB, the others' from the cache,
    // in the order asked. (Bob's bio changed behind the service's back: only the cache
    // still says it was empty.)
    let bob_id = bson::oid::ObjectId::parse_str(&bob).unwrap();
    let behind = bson::doc! { "$set": { "bio": "changed behind its back" } };
    let users_collection = stack.database().await.collection::<bson::Document>("users");
    users_collection.update_one(bson::doc! { "_id": bob_id }, behind).await.unwrap();
    let ids = vec![bob.clone(), alice.clone()];
    let request = authed(BatchGetUsersRequest { ids }, &alice_token);
    let batch = stack.users().await.batch_get_users(request).await.unwrap();
    let seen: Vec<(String, String, String)> =
        batch.into_inner().users.into_iter().map(|u| (u.username, u.email, u.bio)).collect();
    let row = |name: &str, email: &str| (name.to_owned(), email.to_owned(), String::new());
    assert_eq!(seen, [row("bob", ""), row("alice", "alice@example.com")]);

    // An edit, a follow's count (once its event landed), a deletion: each read next.
    let edit = UpdateUserRequest {
        user: Some(User { id: alice.clone(), bio: "new bio".into(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["bio".into()] }),
    };
    let mut users = stack.users().await;
    users.update_user(authed(edit, &alice_token)).await.unwrap();
    assert_eq!(get(&stack, &bob_token, &alice).await.unwrap().bio, "new bio");
    assert_eq!(batch_get(&stack, &bob_token, &alice).await.unwrap().bio, "new bio");
    stack.follow(&bob_token, &alice).await;
    let counted = eventually(Duration::from_secs(10), || async {
        let seen = get(&stack, &bob_token, &alice).await.unwrap();
        (seen.followers_count == 1).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the follow's count never showed");
    stack.delete_account(&alice_token, PASSWORD).await.unwrap();
    get(&stack, &bob_token, &alice).await.refused(Code::NotFound);
    assert!(batch_get(&stack, &bob_token, &alice).await.is_none());
}

#[tokio::test]
async fn the_cache_holds_no_email_or_password_hash() {
    let stack = Stack::start().await;
    let [(alice, _), (_, bob_token)] = stack.register_all(["alice", "bob"]).await;
    get(&stack, &bob_token, &alice).await.unwrap();
    let mut redis = social_testkit::redis().await;
    let cached: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("social-test:user:{alice}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let cached = String::from_utf8_lossy(&cached.expect("the profile is cached")).into_owned();
    assert!(cached.contains("alice"), "{cached}");
    for secret in ["@example.com", "argon2", "password", "credential"] {
        assert!(!cached.contains(secret), "{secret} in the cache: {cached}");
    }
}

#[tokio::test]
async fn a_readers_block_check_is_cached_and_a_block_or_unblock_is_seen_once_it_lands() {
    let stack = Stack::start().await;
    let [(alice, alice_token), (bob, bob_token)] = stack.register_all(["alice", "bob"]).await;
    get(&stack, &bob_token, &alice).await.unwrap();
    stack.settled().await;
    // Warm: whether alice blocks bob is answered without MongoDB.
    // (A round is read again if Redis took longer than its wait, as on a loaded machine.)
    let sent = || queries::sent("user_blocks", "find") + queries::sent("users", "find {_id:");
    let warm = eventually(Duration::from_secs(15), || async {
        let before = sent();
        for _ in 0..3 {
            get(&stack, &bob_token, &alice).await.unwrap();
            assert!(batch_get(&stack, &bob_token, &alice).await.is_some());
        }
        (sent() == before).then_some(())
    })
    .await;
    assert!(warm.is_some(), "warm reads send nothing");
    // The block's event forgets who blocks bob: absent within moments (the entry would
    // otherwise live its minute).
    stack.block(&alice_token, &bob).await.unwrap();
    let absent = eventually(Duration::from_secs(10), || async {
        let gone = get(&stack, &bob_token, &alice).await.err()?.code() == Code::NotFound;
        (gone && batch_get(&stack, &bob_token, &alice).await.is_none()).then_some(())
    })
    .await;
    assert!(absent.is_some(), "alice's profile stays visible to bob");
    stack.unblock(&alice_token, &bob).await.unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        get(&stack, &bob_token, &alice).await.ok()
    })
    .await;
    assert!(back.is_some(), "alice's profile stays absent to bob after the unblock");
}
