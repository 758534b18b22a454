//! Account deletion across every service: nothing of the account is left, every other
//! user's counters equal their documents, racing actions do not survive, and the
//! cascade survives a broker outage and a crash in the middle.

use std::{net::SocketAddr, time::Duration};

use bson::{doc, oid::ObjectId};
use social_proto::{
    engagement::v1::GetCommentRequest,
    graph::v1::FollowRequest,
    user::v1::{GetUserRequest, LoginRequest, RegisterRequest},
};
use social_testkit::{
    Answer, PASSWORD, Refused, Stack, StackOptions, TcpProxy, authed, eventually,
};
use tonic::Code;

use crate::App;

fn user_config(app: &App) -> social_user::Config {
    let mut config = social_user::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        app.stack.events.clone(),
    );
    config.graph_service = social_testkit::peer(
        "social-graph service",
        &format!("http://{}", app.stack.graph.addr),
        Duration::from_secs(5),
    );
    config
}

/// Waits until every service has cleared the account, and every queue and outbox is
/// empty.
async fn deletion_finished(app: &App, user: &str) {
    let config = user_config(app);
    let finished = eventually(Duration::from_secs(60), || async {
        let status = social_user::deletion_status(&config, user).await.unwrap();
        status.contains("\"finished\"").then_some(())
    })
    .await;
    assert!(finished.is_some(), "{}", social_user::deletion_status(&config, user).await.unwrap());
    app.stack.settled().await;
}

async fn count(app: &App, collection: &str, filter: bson::Document) -> u64 {
    app.stack.count(collection, filter).await
}

/// What of `user`, or about them, each service's collections hold, by kind.
async fn holdings(app: &App, user: &str) -> std::collections::BTreeMap<&'static str, u64> {
    let is = social_kit::mongo::equals_id(ObjectId::parse_str(user).unwrap());
    let kinds = [
        ("posts", "posts", doc! { "user_id": is.clone(), "state": "active" }),
        ("likes", "likes", doc! { "user_id": is.clone(), "state": "active" }),
        ("comments", "comments", doc! { "user_id": is.clone(), "state": "active" }),
        ("follows from", "followers", doc! { "follower_id": is.clone(), "state": "active" }),
        ("follows to", "followers", doc! { "followee_id": is.clone(), "state": "active" }),
        ("notifications to", "notifications", doc! { "user_id": is.clone() }),
        ("notifications from", "notifications", doc! { "source_user_id": is.clone() }),
        ("sessions", "sessions", doc! { "user_id": is.clone(), "state": "active" }),
    ];
    let mut held = std::collections::BTreeMap::new();
    for (kind, collection, filter) in kinds {
        held.insert(kind, count(app, collection, filter).await);
    }
    held
}

/// Asserts that `user` holds something of each of `kinds`: what a later "nothing left"
/// proves gone was there.
async fn holds(app: &App, user: &str, kinds: &[&str]) {
    let held = holdings(app, user).await;
    for kind in kinds {
        assert!(held[kind] > 0, "nothing of {kind} to delete: {held:?}");
    }
}

/// Nothing that is the account's, or about it, is left in any service's collection.
async fn nothing_left_of(app: &App, user: &str) {
    let held = holdings(app, user).await;
    assert!(held.values().all(|n| *n == 0), "left: {held:?}");
    // The account's document keeps only its reserved username.
    let doc = app
        .stack
        .database()
        .await
        .collection::<bson::Document>("users")
        .find_one(doc! { "_id": ObjectId::parse_str(user).unwrap() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.get_str("password_hash").unwrap(), "");
    assert!(doc.get_str("email").unwrap().starts_with("deleted:"));
}

/// Recounting every counter from the documents changes nothing: they were true.
async fn counters_are_true(app: &App, users: &[&str], posts: &[&str], comments: &[&str]) {
    let before = snapshot(app, users, posts, comments).await;
    let user = user_config(app);
    social_user::recompute_counters(&user, Duration::ZERO).await.unwrap();
    let mut post = social_post::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        social_testkit::peer(
            "graph",
            &format!("http://{}", app.stack.graph.addr),
            Duration::from_secs(5),
        ),
        app.stack.events.clone(),
    );
    post.engagement_service = social_testkit::peer(
        "engagement",
        &format!("http://{}", app.stack.engagement.addr),
        Duration::from_secs(5),
    );
    social_post::recompute_counters(&post, Duration::ZERO).await.unwrap();
    let engagement = social_engagement::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        social_testkit::peer(
            "post",
            &format!("http://{}", app.stack.post.addr),
            Duration::from_secs(5),
        ),
        app.stack.events.clone(),
    );
    social_engagement::recompute_counters(&engagement, Duration::ZERO).await.unwrap();
    assert_eq!(snapshot(app, users, posts, comments).await, before);
}

async fn snapshot(app: &App, users: &[&str], posts: &[&str], comments: &[&str]) -> Vec<i64> {
    let mut values = Vec::new();
    let mut client = app.stack.users().await;
    for id in users {
        let u = client.get_user(GetUserRequest { id: (*id).into() }).await.answer();
        values.extend([u.followers_count, u.following_count]);
    }
    for id in posts {
        let p = app.get_post(id).await;
        values.extend([p.likes_count, p.comments_count]);
    }
    for id in comments {
        let c = app
            .engagement
            .clone()
            .get_comment(GetCommentRequest { id: (*id).into() })
            .await
            .answer();
        values.push(c.likes_count);
    }
    values
}

async fn follow(app: &App, token: &str, followee: &str) {
    app.stack.follow(token, followee).await
}

async fn like_comment(app: &App, token: &str, comment: &str) {
    app.like_comment(token, comment).await.unwrap();
}

#[tokio::test]
async fn a_deleted_account_leaves_nothing_and_every_other_counter_true() {
    let app = App::start().await;
    let [(doomed_id, doomed), (alice_id, alice), (bob_id, bob)] =
        app.stack.register_all(["doomed", "alice", "bob"]).await;
    // The account's posts, liked and commented by others (and a comment of theirs liked).
    let own = app.post(&doomed, "mine").await;
    app.like_post(&alice, &own.id).await.unwrap();
    let on_own = app.comment(&bob, &own.id, "nice, @doomed").await.unwrap();
    like_comment(&app, &alice, &on_own.id).await;
    // Its likes and comments on others' posts and comments.
    let theirs = app.post(&alice, "alice's").await;
    app.like_post(&doomed, &theirs.id).await.unwrap();
    let bobs = app.comment(&bob, &theirs.id, "bob's comment").await.unwrap();
    like_comment(&app, &doomed, &bobs.id).await;
    let doomeds = app.comment(&doomed, &theirs.id, "hello @alice and @bob").await.unwrap();
    like_comment(&app, &alice, &doomeds.id).await;
    // Follows both ways.
    follow(&app, &doomed, &alice_id).await;
    follow(&app, &doomed, &bob_id).await;
    follow(&app, &alice, &doomed_id).await;
    follow(&app, &bob, &alice_id).await;
    app.stack.settled().await;
    holds(
        &app,
        &doomed_id,
        &[
            "posts",
            "likes",
            "comments",
            "follows from",
            "follows to",
            "notifications to",
            "notifications from",
            "sessions",
        ],
    )
    .await;

    // A wrong password changes nothing.
    let err = app.stack.delete_account(&doomed, "not the password").await.unwrap_err();
    assert_eq!(social_testkit::violated_fields(&err), ["password"]);
    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();
    // Gone for clients at once.
    let mut users = app.stack.users().await;
    users.get_user(GetUserRequest { id: doomed_id.clone() }).await.refused(Code::NotFound);
    users
        .login(LoginRequest {
            username_or_email: "doomed".into(),
            password: PASSWORD.into(),
            device: String::new(),
        })
        .await
        .refused(Code::Unauthenticated);
    // The username is reserved during the quarantine.
    let err = users
        .register(RegisterRequest {
            username: "Doomed".into(),
            email: "someone.else@example.com".into(),
            password: PASSWORD.into(),
            full_name: String::new(),
            device: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(social_testkit::violated_fields(&err), ["username"]);
    // A second call is harmless.
    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();

    deletion_finished(&app, &doomed_id).await;
    nothing_left_of(&app, &doomed_id).await;
    // What the others see: the account's likes, comments and follows are gone.
    let p = app.get_post(&theirs.id).await;
    assert_eq!((p.likes_count, p.comments_count), (0, 1));
    let mut users = app.stack.users().await;
    let followers = |id: &str| {
        let (mut users, id) = (users.clone(), id.to_owned());
        async move {
            let u = users.get_user(GetUserRequest { id }).await.answer();
            (u.followers_count, u.following_count)
        }
    };
    assert_eq!(followers(&alice_id).await, (1, 0));
    assert_eq!(followers(&bob_id).await, (0, 1));
    let err = app.get_post_err(&own.id).await;
    assert_eq!(err.code(), Code::NotFound);
    let _ = &mut users;
    counters_are_true(&app, &[&alice_id, &bob_id], &[&theirs.id], &[&bobs.id]).await;
}

// Several worker threads: the racing calls and the services' handlers run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_racing_a_deletion_do_not_survive_it() {
    let app = App::start().await;
    let [(doomed_id, doomed), (alice_id, alice)] = app.stack.register_all(["racer", "alice"]).await;
    let posts: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(app.post(&alice, &format!("p{i}")).await.id);
        }
        ids
    };
    // An unexpired token of the account that no service knows to refuse (as one whose
    // session's end has not reached them yet): its likes, comments and follow race the
    // cascade, all at once, in waves from the deletion's acknowledgement until after
    // the event has reached each service.
    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();
    let doomed = social_testkit::token_for(ObjectId::parse_str(&doomed_id).unwrap());
    let wave = |delay_ms: u64| {
        let (app, doomed, posts, alice_id) = (&app, &doomed, &posts, &alice_id);
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let writes = posts.iter().map(|post| async move {
                let (like, comment) =
                    tokio::join!(app.like_post(doomed, post), app.comment(doomed, post, "late"));
                usize::from(like.is_ok()) + usize::from(comment.is_ok())
            });
            let follow = async {
                let mut graph = app.stack.graph().await;
                let r = graph
                    .follow(authed(FollowRequest { followee_id: alice_id.clone() }, doomed))
                    .await;
                usize::from(r.is_ok())
            };
            let (writes, follow) = tokio::join!(futures::future::join_all(writes), follow);
            writes.iter().sum::<usize>() + follow
        }
    };
    let landed: usize =
        futures::future::join_all([0, 20, 60, 150, 400].map(wave)).await.into_iter().sum();
    assert!(landed > 0, "no racing write was accepted: nothing raced");
    deletion_finished(&app, &doomed_id).await;
    // Once every service has heard of it, its writes are refused.
    let err = app.like_post(&doomed, &posts[0]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    app.stack.settled().await;
    nothing_left_of(&app, &doomed_id).await;
    // Counters read again once every queue has drained.
    for post in &posts {
        let p = app.get_post(post).await;
        assert_eq!((p.likes_count, p.comments_count), (0, 0), "{post}");
    }
    let alice =
        app.stack.users().await.get_user(GetUserRequest { id: alice_id.clone() }).await.answer();
    assert_eq!(alice.followers_count, 0);
    let refs: Vec<&str> = posts.iter().map(String::as_str).collect();
    counters_are_true(&app, &[&alice_id], &refs, &[]).await;
}

#[tokio::test]
async fn a_cascade_survives_a_broker_outage_and_a_crash_in_the_middle() {
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    // Every service's link to the broker, and the engagement service's own.
    let proxy = TcpProxy::start(rabbit).await;
    let engagement_link = TcpProxy::start(rabbit).await;
    let url = |p: &TcpProxy| format!("amqp://guest:guest@{}/%2f", p.addr);
    let mut app = App::with(
        Stack::start_with(StackOptions {
            amqp_url: Some(url(&proxy)),
            engagement_amqp_url: Some(url(&engagement_link)),
            ..Default::default()
        })
        .await,
    )
    .await;
    let [(doomed_id, doomed), (alice_id, alice)] = app.stack.register_all(["busy", "alice"]).await;
    let mut posts = Vec::new();
    for i in 0..150 {
        let post = app.post(&alice, &format!("p{i}")).await.id;
        app.like_post(&doomed, &post).await.unwrap();
        posts.push(post);
    }
    follow(&app, &doomed, &alice_id).await;
    app.stack.settled().await;
    holds(&app, &doomed_id, &["likes", "follows from", "notifications from", "sessions"]).await;

    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();
    // The broker goes away while the cascade runs, then the engagement service crashes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut().await;
    engagement_link.cut().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let crashed = app.crash_and_restart_engagement().await;
    engagement_link.restore();

    deletion_finished(&app, &doomed_id).await;
    crashed.stays_dead(&engagement_link).await;
    nothing_left_of(&app, &doomed_id).await;
    for post in &posts {
        assert_eq!(app.get_post(post).await.likes_count, 0, "{post}");
    }
    let refs: Vec<&str> = posts.iter().map(String::as_str).collect();
    counters_are_true(&app, &[&alice_id], &refs, &[]).await;
}

/// A user service that knows where its peers are (it exports), configured by `tune`.
async fn exporting_users(
    app: &App,
    tune: impl FnOnce(&mut social_user::Config),
) -> (
    social_testkit::Running,
    social_proto::user::v1::user_service_client::UserServiceClient<tonic::transport::Channel>,
) {
    let peer = |name, addr: SocketAddr| {
        social_testkit::peer(name, &format!("http://{addr}"), Duration::from_secs(5))
    };
    let mut config = user_config(app);
    config.post_service = peer("post service", app.stack.post.addr);
    config.engagement_service = peer("engagement service", app.stack.engagement.addr);
    config.graph_service = peer("social-graph service", app.stack.graph.addr);
    tune(&mut config);
    let users = social_testkit::start(|l, s| social_user::run(config, l, s)).await;
    let client =
        social_proto::user::v1::user_service_client::UserServiceClient::new(users.channel().await);
    (users, client)
}

#[tokio::test]
async fn an_export_read_too_slowly_breaks_off_at_its_deadline() {
    use social_proto::user::v1::ExportAccountRequest;
    let app = App::start().await;
    let (_, writer) = app.stack.register("writer").await;
    // More than the reader's stream window holds: 400 posts of 500 characters.
    let text = "x".repeat(500);
    for _ in 0..20 {
        let posts = (0..20).map(|_| app.post(&writer, &text));
        futures::future::join_all(posts).await;
    }
    let (users, _) = exporting_users(&app, |c| c.export_within = Duration::from_secs(1)).await;
    // A client whose stream window is small: the service waits on it (as on a client
    // that reads a byte now and then).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", users.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = social_proto::user::v1::user_service_client::UserServiceClient::new(channel);
    let mut export = client.export_account(authed(ExportAccountRequest {}, &writer)).await.answer();
    assert!(export.message().await.unwrap().is_some(), "the profile");
    // The client reads on after the export's time: what was on its way arrives, then
    // the export breaks off instead of going on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut posts = 0;
    let ended = loop {
        match export.message().await {
            Ok(Some(_)) => posts += 1,
            ended => break ended,
        }
    };
    ended.refused(Code::DeadlineExceeded);
    assert!(posts < 400, "{posts} posts arrived");
}

#[tokio::test]
async fn an_account_exports_everything_it_made_before_it_goes() {
    use social_proto::user::v1::{ExportAccountRequest, export_record::Record};
    let app = App::start().await;
    let [(writer_id, writer), (alice_id, alice)] =
        app.stack.register_all(["writer", "alice"]).await;
    let mine = app.post(&writer, "mine").await;
    let _also = app.post(&writer, "also mine").await;
    let theirs = app.post(&alice, "alice's").await;
    app.like_post(&writer, &theirs.id).await.unwrap();
    app.comment(&writer, &theirs.id, "nice").await.unwrap();
    app.comment(&writer, &mine.id, "my own").await.unwrap();
    follow(&app, &writer, &alice_id).await;
    follow(&app, &alice, &writer_id).await;

    let (_users, mut client) = exporting_users(&app, |_| ()).await;
    let mut export = client.export_account(authed(ExportAccountRequest {}, &writer)).await.answer();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    let mut first = None;
    while let Some(record) = export.message().await.unwrap() {
        let kind = match record.record.unwrap() {
            Record::Profile(u) => {
                assert_eq!(u.email, "writer@example.com", "the owner's own data");
                "profile"
            }
            Record::Post(_) => "post",
            Record::Like(_) => "like",
            Record::Comment(_) => "comment",
            Record::Follow(_) => "follow",
        };
        first.get_or_insert(kind);
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(first, Some("profile"));
    let want = [("comment", 2), ("follow", 2), ("like", 1), ("post", 2), ("profile", 1)];
    assert_eq!(kinds, want.into_iter().collect());

    // Gone with the account: its session ended, so its token exports nothing.
    app.stack.delete_account(&writer, PASSWORD).await.unwrap();
    client
        .export_account(authed(ExportAccountRequest {}, &writer))
        .await
        .refused(Code::Unauthenticated);
}

#[tokio::test]
async fn a_deleted_accounts_token_writes_nothing_a_month_later() {
    use social_proto::post::v1::CreatePostRequest;
    let app = App::start().await;
    let [(doomed_id, doomed), (alice_id, alice)] = app.stack.register_all(["ghost", "alice"]).await;
    let post = app.post(&alice, "still here").await;
    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();
    deletion_finished(&app, &doomed_id).await;
    // A month and a day later, everything a TTL index purges by then is gone (the
    // account's own document among them).
    let later =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 31 * 24 * 3_600_000);
    app.stack.expire_as_of(later).await;
    assert_eq!(
        count(&app, "users", doc! { "_id": ObjectId::parse_str(&doomed_id).unwrap() }).await,
        0,
        "the account's document was purged"
    );
    // A token of the account, as a session that survived would mint, writes nothing.
    let token = social_testkit::token_for(ObjectId::parse_str(&doomed_id).unwrap());
    let refused = |r: Result<(), tonic::Status>, what: &str| {
        let err = r.expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    };
    refused(app.like_post(&token, &post.id).await, "a like");
    refused(app.comment(&token, &post.id, "boo").await.map(drop), "a comment");
    refused(
        app.stack
            .graph()
            .await
            .follow(authed(FollowRequest { followee_id: alice_id.clone() }, &token))
            .await
            .map(drop),
        "a follow",
    );
    refused(
        app.stack
            .posts()
            .await
            .create_post(authed(
                CreatePostRequest { content: "I am back".into(), media: vec![] },
                &token,
            ))
            .await
            .map(drop),
        "a post",
    );
    app.stack.settled().await;
    let p = app.get_post(&post.id).await;
    assert_eq!((p.likes_count, p.comments_count), (0, 0));
}

#[tokio::test]
async fn a_write_whose_check_for_a_deleted_account_failed_is_undone_by_its_retry_or_later() {
    let app = App::start().await;
    let [(doomed_id, doomed), (_, alice)] = app.stack.register_all(["ghost", "alice"]).await;
    let post = app.post(&alice, "p").await;
    let other = app.post(&alice, "q").await;
    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();
    deletion_finished(&app, &doomed_id).await;
    // An unexpired token of the account that no service knows to refuse (as one whose
    // session's end has not reached them yet) writes; each write's check of the
    // account's tombstone fails after its insert, so it answers UNAVAILABLE and stays.
    let doomed = social_testkit::token_for(ObjectId::parse_str(&doomed_id).unwrap());
    let fail_next_check = || fail::cfg("engagement::account_removed", "1*return").unwrap();
    fail_next_check();
    let err = app.like_post(&doomed, &post.id).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // The client retries: the like is checked again, undone, and refused.
    let err = app.like_post(&doomed, &post.id).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // These clients never retry: what they left is checked in the background.
    fail_next_check();
    app.like_post(&doomed, &other.id).await.unwrap_err();
    fail_next_check();
    let err = app.comment(&doomed, &other.id, "hello").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(social_kit::faults::fired("engagement::account_removed"), 3);
    let is = social_kit::mongo::equals_id(ObjectId::parse_str(&doomed_id).unwrap());
    let gone = eventually(Duration::from_secs(15), || async {
        let likes = count(&app, "likes", doc! { "user_id": is.clone(), "state": "active" }).await;
        let comments =
            count(&app, "comments", doc! { "user_id": is.clone(), "state": "active" }).await;
        (likes + comments == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the writes stayed");
    app.stack.settled().await;
    for p in [&post, &other] {
        let p = app.get_post(&p.id).await;
        assert_eq!((p.likes_count, p.comments_count), (0, 0), "{}", p.id);
    }
}

#[tokio::test]
async fn a_deleted_comment_ends_its_likes_and_deleted_words_are_gone_at_once() {
    use social_proto::engagement::v1::DeleteCommentRequest;
    let app = App::start().await;
    let [(_, alice), (_, bob)] = app.stack.register_all(["alice", "bob"]).await;
    let post = app.post(&alice, "the words of a post").await;
    let comment = app.comment(&bob, &post.id, "the words of a comment").await.unwrap();
    for _ in 0..3 {
        like_comment(&app, &social_testkit::token_for(ObjectId::new()), &comment.id).await;
    }
    let comment_id = ObjectId::parse_str(&comment.id).unwrap();
    let likes_of = |state: &'static str| {
        let app = &app;
        async move {
            count(
                app,
                "likes",
                doc! { "target_id": social_kit::mongo::equals_id(comment_id), "state": state },
            )
            .await
        }
    };
    assert_eq!(likes_of("active").await, 3);
    app.engagement
        .clone()
        .delete_comment(authed(DeleteCommentRequest { id: comment.id.clone() }, &bob))
        .await
        .unwrap();
    // Its likes end, each with its event (the likers' exports no longer list them).
    let ended = eventually(Duration::from_secs(15), || async {
        (likes_of("ended").await == 3).then_some(())
    })
    .await;
    assert!(ended.is_some(), "active: {}", likes_of("active").await);
    // Its words and media are gone from the database at once, and so are the post's.
    let db = app.stack.database().await;
    let stored = |collection: &'static str, id: &str| {
        let (db, id) = (db.clone(), ObjectId::parse_str(id).unwrap());
        async move {
            db.collection::<bson::Document>(collection)
                .find_one(doc! { "_id": id })
                .await
                .unwrap()
                .unwrap()
        }
    };
    let c = stored("comments", &comment.id).await;
    assert_eq!(c.get_str("content").unwrap(), "");
    assert!(c.get_array("media").unwrap().is_empty());
    app.stack.delete_post(&alice, &post.id).await;
    let p = stored("posts", &post.id).await;
    assert_eq!(p.get_str("content").unwrap(), "");
}

/// A deleted post loses every comment and every like under it, however many: removed in
/// batches (one statement each), in steps a handler's time allows, not in one statement
/// whatever their number.
#[tokio::test]
async fn a_deleted_post_loses_more_comments_and_likes_than_a_batch_holds() {
    let app = App::start().await;
    let (alice_id, alice) = app.stack.register("alice").await;
    let post = app.post(&alice, "a post many like").await;
    let (post_id, author) =
        (ObjectId::parse_str(&post.id).unwrap(), ObjectId::parse_str(&alice_id).unwrap());
    // Written as the service writes them: 450 likes of the post, 250 comments under it.
    let now = bson::DateTime::now();
    let like = |i: i64| {
        doc! {
            "_id": ObjectId::new(), "user_id": ObjectId::new(), "target_id": post_id,
            "target_type": "post", "post_id": post_id, "target_author_id": author,
            "state": "active", "active_key": "active", "sort_key": i, "created_at": now,
            "started_ms": now.timestamp_millis(), "outbox_pending": 0,
        }
    };
    let comment = |i: i64| {
        doc! {
            "_id": ObjectId::new(), "user_id": ObjectId::new(), "post_id": post_id,
            "post_author_id": author, "content": "a comment", "media": [], "state": "active",
            "sort_key": i, "created_at": now, "updated_at": now,
            "started_ms": now.timestamp_millis(), "outbox_pending": 0,
        }
    };
    let db = app.stack.database().await;
    let likes: Vec<bson::Document> = (1..=450).map(like).collect();
    db.collection::<bson::Document>("likes").insert_many(likes).await.unwrap();
    let comments: Vec<bson::Document> = (1..=250).map(comment).collect();
    db.collection::<bson::Document>("comments").insert_many(comments).await.unwrap();
    app.stack.delete_post(&alice, &post.id).await;
    let under = || doc! { "post_id": social_kit::mongo::equals_id(post_id) };
    let left = || async {
        let active = doc! { "state": "active", "post_id": social_kit::mongo::equals_id(post_id) };
        (count(&app, "likes", under()).await, count(&app, "comments", active).await)
    };
    let gone =
        eventually(Duration::from_secs(20), || async { (left().await == (0, 0)).then_some(()) });
    assert!(gone.await.is_some(), "left: {:?}", left().await);
}

/// A post stored by a token of an account whose deletion had finished, whose check for
/// that deletion failed after its insert (UNAVAILABLE), is deleted by its retry with the
/// same idempotency key, or, if nobody retries, in the background: it does not outlive
/// the account.
#[tokio::test]
async fn a_post_whose_check_for_a_deleted_account_failed_is_undone_by_its_retry_or_later() {
    use social_proto::post::v1::CreatePostRequest;
    let app = App::start().await;
    let (doomed_id, doomed) = app.stack.register("ghost").await;
    app.stack.delete_account(&doomed, PASSWORD).await.unwrap();
    deletion_finished(&app, &doomed_id).await;
    // An unexpired token of the account that no service knows to refuse yet.
    let doomed = social_testkit::token_for(ObjectId::parse_str(&doomed_id).unwrap());
    let create = |key: &str| {
        let request = CreatePostRequest { content: "still here?".into(), media: vec![] };
        let mut request = authed(request, &doomed);
        request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
        let mut posts = app.posts.clone();
        async move { posts.create_post(request).await }
    };
    let fail_next_check = || fail::cfg("post::account_removed", "1*return").unwrap();
    fail_next_check();
    assert_eq!(create("k-1").await.unwrap_err().code(), Code::Unavailable);
    // The client retries: the post is checked again, deleted, and refused.
    assert_eq!(create("k-1").await.unwrap_err().code(), Code::Unauthenticated);
    // This one never retries: its post is checked in the background.
    fail_next_check();
    assert_eq!(create("k-2").await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(social_kit::faults::fired("post::account_removed"), 2);
    let is = social_kit::mongo::equals_id(ObjectId::parse_str(&doomed_id).unwrap());
    let active = || doc! { "user_id": is.clone(), "state": "active" };
    let gone = eventually(Duration::from_secs(15), || async {
        (count(&app, "posts", active()).await == 0).then_some(())
    });
    assert!(gone.await.is_some(), "the posts stayed");
    // A live account's post is marked checked at once (on its author's shard).
    let (alice_id, alice) = app.stack.register("alice").await;
    app.post(&alice, "checked").await;
    let alice = social_kit::mongo::equals_id(ObjectId::parse_str(&alice_id).unwrap());
    let unchecked = doc! { "user_id": alice, "unchecked_since": { "$exists": true } };
    assert_eq!(count(&app, "posts", unchecked).await, 0);
    assert_eq!(
        count(
            &app,
            "posts",
            doc! { "user_id": is.clone(), "unchecked_since": { "$exists": true } }
        )
        .await,
        0
    );
}
