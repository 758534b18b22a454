//! SocialGraphService through its gRPC surface, with a real user service beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, time::Duration};

use bson::oid::ObjectId;
use social_proto::graph::v1::{
    FollowRequest, GetRelationshipRequest, ListFollowerIdsRequest, ListFollowersRequest,
    ListFollowingIdsRequest, ListFollowingRequest, UnfollowRequest,
    social_graph_service_client::SocialGraphServiceClient,
};
use social_testkit::{Stack, StackOptions, authed, token_for, violated_fields};
use tonic::{Code, transport::Channel};

mod blocks;
mod mutes;

struct App {
    stack: Stack,
    graph: SocialGraphServiceClient<Channel>,
}

async fn spawn_with_user_service(user_url: Option<String>, timeout: Duration) -> App {
    let stack = Stack::start_with(StackOptions {
        user_url_for_graph: user_url,
        peer_timeout: Some(timeout),
        ..Default::default()
    })
    .await;
    App {
        graph: stack.graph().await,
        stack,
    }
}

async fn spawn() -> App {
    spawn_with_user_service(None, Duration::from_secs(2)).await
}

impl App {
    /// A registered user's id and token.
    async fn user(&self, name: &str) -> (String, String) {
        self.stack.register(name).await
    }

    async fn follow(
        &self,
        token: &str,
        followee: &str,
    ) -> Result<social_proto::graph::v1::Follow, tonic::Status> {
        self.graph
            .clone()
            .follow(authed(
                FollowRequest {
                    followee_id: followee.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The user's `followers_count`, as the user service shows it.
    async fn followers_count(&self, user: &str) -> i64 {
        self.stack
            .users()
            .await
            .get_user(social_proto::user::v1::GetUserRequest { id: user.into() })
            .await
            .unwrap()
            .into_inner()
            .followers_count
    }

    async fn database(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
            .await
            .unwrap()
            .database(&self.stack.database)
    }

    async fn following(&self, user: &str, size: i32, token: &str) -> (Vec<String>, String) {
        self.follows_page(false, user, size, token).await
    }

    async fn followers(&self, user: &str, size: i32, token: &str) -> (Vec<String>, String) {
        self.follows_page(true, user, size, token).await
    }

    /// A page of `user`'s followers' ids (`followers`) or of its followees' ids.
    async fn follows_page(
        &self,
        followers: bool,
        user: &str,
        size: i32,
        token: &str,
    ) -> (Vec<String>, String) {
        let (user_id, page_size, page_token) = (user.to_owned(), size, token.to_owned());
        let mut graph = self.graph.clone();
        let (follows, next) = if followers {
            let request = ListFollowersRequest {
                user_id,
                page_size,
                page_token,
            };
            let r = graph.list_followers(request).await.unwrap().into_inner();
            (r.follows, r.next_page_token)
        } else {
            let request = social_proto::graph::v1::ListFollowingRequest {
                user_id,
                page_size,
                page_token,
            };
            let r = graph.list_following(request).await.unwrap().into_inner();
            (r.follows, r.next_page_token)
        };
        let other = |f: social_proto::graph::v1::Follow| {
            if followers {
                f.follower_id
            } else {
                f.followee_id
            }
        };
        (follows.into_iter().map(other).collect(), next)
    }
}

#[tokio::test]
async fn follow_unfollow_lists_and_relationship() {
    let app = spawn().await;
    let (alice, alice_token) = app.user("alice").await;
    let (bob, bob_token) = app.user("bob").await;
    let (carol, carol_token) = app.user("carol").await;

    let first = app.follow(&alice_token, &bob).await.unwrap();
    assert_eq!(
        (first.follower_id.as_str(), first.followee_id.as_str()),
        (alice.as_str(), bob.as_str())
    );
    // Idempotent: the same follow comes back.
    let again = app.follow(&alice_token, &bob).await.unwrap();
    assert_eq!(again.created_at, first.created_at);
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.follow(&carol_token, &bob).await.unwrap();
    app.follow(&bob_token, &alice).await.unwrap();

    assert_eq!(
        app.followers(&bob, 0, "").await.0,
        [carol.clone(), alice.clone()]
    );
    let following = app
        .graph
        .clone()
        .list_following(ListFollowingRequest {
            user_id: alice.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(following.follows.len(), 1);
    assert_eq!(following.follows[0].followee_id, bob);

    let rel = |a: &str, b: &str| GetRelationshipRequest {
        user_id: a.into(),
        other_user_id: b.into(),
    };
    let r = app
        .graph
        .clone()
        .get_relationship(rel(&alice, &bob))
        .await
        .unwrap()
        .into_inner();
    assert!(r.following && r.followed_by);
    let r = app
        .graph
        .clone()
        .get_relationship(rel(&carol, &alice))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.following && !r.followed_by);
    let err = app
        .graph
        .clone()
        .get_relationship(rel("x", "y"))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["user_id", "other_user_id"]);

    let mut g = app.graph.clone();
    g.unfollow(authed(
        UnfollowRequest {
            followee_id: bob.clone(),
        },
        &alice_token,
    ))
    .await
    .unwrap();
    g.unfollow(authed(
        UnfollowRequest {
            followee_id: bob.clone(),
        },
        &alice_token,
    ))
    .await
    .unwrap();
    assert_eq!(app.followers(&bob, 0, "").await.0, [carol]);
    let ids = g
        .list_following_ids(social_testkit::as_service(ListFollowingIdsRequest {
            user_id: bob.clone(),
            limit: 0,
            without_muted: false,
            with_mutes: false,
            among: Vec::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids.user_ids, std::slice::from_ref(&alice));
    assert!(!ids.truncated);

    // The home timelines' questions: bob's followers, at most one of them at a time,
    // and whether bob follows each of a few accounts.
    let followers = |limit| {
        social_testkit::as_service(ListFollowerIdsRequest {
            user_id: alice.clone(),
            limit,
        })
    };
    let some = g
        .list_follower_ids(followers(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((some.user_ids, some.truncated), (vec![bob.clone()], false));
    let err = g.list_follower_ids(followers(-1)).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["limit"]);
    let among = |among: Vec<String>| {
        social_testkit::as_service(ListFollowingIdsRequest {
            user_id: bob.clone(),
            with_mutes: true,
            among,
            ..Default::default()
        })
    };
    let unknown = bson::oid::ObjectId::new().to_hex();
    let answer = g
        .list_following_ids(among(vec![unknown.clone(), alice.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.user_ids, std::slice::from_ref(&alice));
    assert!(answer.mutes.is_empty());
    let answer = g.list_following_ids(among(vec![unknown])).await.unwrap();
    assert!(answer.into_inner().user_ids.is_empty());
    let err = g
        .list_following_ids(among(vec!["nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["among[0]"]);
    // Others may not ask.
    let err = g
        .list_follower_ids(ListFollowerIdsRequest {
            user_id: alice.clone(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn follow_is_validated() {
    let app = spawn().await;
    let (alice, alice_token) = app.user("alice").await;
    let mut g = app.graph.clone();
    let err = g
        .follow(FollowRequest {
            followee_id: alice.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app.follow(&alice_token, "not-an-id").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["followee_id"]);
    let err = app.follow(&alice_token, &alice).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["followee_id"]);
    let err = app
        .follow(&alice_token, &ObjectId::new().to_hex())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = g
        .unfollow(UnfollowRequest {
            followee_id: alice.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = g
        .list_followers(ListFollowersRequest {
            user_id: alice,
            page_size: -1,
            page_token: "bogus".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_size", "page_token"]);
}

// Several worker threads: the eight calls are handled in parallel, not interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_follows_of_one_pair_make_one_follow() {
    let app = spawn().await;
    let (bob, _) = app.user("bob").await;
    let follower = ObjectId::new();
    let token = token_for(follower);
    let results = futures::future::join_all((0..8).map(|_| app.follow(&token, &bob))).await;
    // Every call answers with the one follow, to the nanosecond.
    let created: HashSet<_> = results
        .into_iter()
        .map(|r| {
            let at = r.unwrap().created_at.unwrap();
            (at.seconds, at.nanos)
        })
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(app.followers(&bob, 100, "").await.0, [follower.to_hex()]);
    // One follow, so one event: bob's count is one, and stays one once it all drained.
    let counted = social_testkit::eventually(Duration::from_secs(15), || async {
        (app.followers_count(&bob).await == 1).then_some(())
    })
    .await;
    assert!(counted.is_some(), "followers_count never became 1");
    app.stack.settled().await;
    assert_eq!(app.followers_count(&bob).await, 1);
}

#[tokio::test]
async fn pages_are_stable_while_new_follows_arrive() {
    let app = spawn().await;
    let (bob, _) = app.user("bob").await;
    let mut original = Vec::new();
    for _ in 0..25 {
        let follower = ObjectId::new();
        app.follow(&token_for(follower), &bob).await.unwrap();
        original.push(follower.to_hex());
    }
    original.reverse(); // newest first

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = app.followers(&bob, 10, &token).await;
        seen.extend(page);
        // New followers arrive while the client pages.
        app.follow(&token_for(ObjectId::new()), &bob).await.unwrap();
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen, original);

    // A token is bound to its query.
    let (_, token) = app.followers(&bob, 5, "").await;
    let err = app
        .graph
        .clone()
        .list_following(ListFollowingRequest {
            user_id: bob,
            page_size: 5,
            page_token: token,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn a_down_user_service_is_unavailable_and_a_silent_one_times_out() {
    // Nothing listens on port 1.
    let app = spawn_with_user_service(
        Some("http://127.0.0.1:1".into()),
        Duration::from_millis(500),
    )
    .await;
    let err = app
        .follow(&token_for(ObjectId::new()), &ObjectId::new().to_hex())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // A peer that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app = spawn_with_user_service(Some(url), Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let err = app
        .follow(&token_for(ObjectId::new()), &ObjectId::new().to_hex())
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

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
    let follows = app
        .database()
        .await
        .collection::<bson::Document>("followers");
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
    let db = app.database().await;
    let leases = db.collection::<bson::Document>("sort_key_slots");
    let lease = leases.find_one(bson::doc! {}).await.unwrap().unwrap();
    // The stand-in gives small integers back as Int32.
    let slot = match lease.get("_id") {
        Some(bson::Bson::Int32(s)) => i64::from(*s),
        Some(bson::Bson::Int64(s)) => *s,
        other => panic!("no slot: {other:?}"),
    };
    assert!(lease.get_i64("expires_ms").unwrap() > bson::DateTime::now().timestamp_millis());
    let (alice, alice_token) = app.user("alice").await;
    let (bob, _) = app.user("bob").await;
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
    assert_eq!(
        paging::key_slot(follow.get_i64("sort_key").unwrap()),
        now_held
    );
    app.follow(&alice_token, &bob).await.unwrap();
}

#[tokio::test]
async fn a_session_that_ended_is_refused_here_within_moments_and_by_a_replica_started_later() {
    use social_proto::user::v1::{LoginRequest, LogoutRequest};
    let app = spawn().await;
    let (bob, _) = app.user("bob").await;
    app.user("alice").await;
    let login = app
        .stack
        .users()
        .await
        .login(LoginRequest {
            username_or_email: "alice".into(),
            password: "correct horse battery".into(),
            device: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = login.access_token;
    app.follow(&token, &bob).await.unwrap();
    app.stack
        .users()
        .await
        .logout(authed(LogoutRequest {}, &token))
        .await
        .unwrap();
    // The token is unexpired, but its session ended: refused here within moments.
    let refused = |graph: SocialGraphServiceClient<Channel>| {
        let (token, bob) = (token.clone(), bob.clone());
        social_testkit::eventually(Duration::from_secs(5), move || {
            let (mut graph, token, bob) = (graph.clone(), token.clone(), bob.clone());
            async move {
                // Following again changes nothing while the token still works.
                let request = authed(FollowRequest { followee_id: bob }, &token);
                match graph.follow(request).await {
                    Err(e) if e.code() == Code::Unauthenticated => Some(()),
                    _ => None,
                }
            }
        })
    };
    assert!(refused(app.graph.clone()).await.is_some(), "still accepted");
    // A replica that starts afterwards (it heard no broadcast) asks the user service.
    let replica = social_testkit::start_graph(
        &app.stack.database,
        &app.stack.events,
        &format!("http://{}", app.stack.user.addr),
        Duration::from_secs(2),
    )
    .await;
    let graph = SocialGraphServiceClient::new(replica.channel().await);
    assert!(
        refused(graph).await.is_some(),
        "the new replica accepted it"
    );
    assert_eq!(app.followers(&bob, 100, "").await.0.len(), 1);
}
