//! Every route, as a client walks through them, and their errors.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Answer, App, RpcCounter};
use social_testkit::Stack;

#[tokio::test]
async fn a_client_walks_through_every_route() {
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let (bob_id, bob) = app.sign_up("bob").await;

    // Sessions: log in, refresh, list, revoke.
    let login = app
        .post("/v1/sessions", None, json!({"username_or_email": "alice", "password": "correct horse battery", "device": "laptop"}))
        .await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
    // A session has no resource to GET: no Location that would not resolve.
    assert!(login.header("location").is_none());
    let refreshed = app
        .post("/v1/sessions/refresh", None, json!({"refresh_token": login.body["refresh_token"]}))
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let laptop = refreshed.body["access_token"].as_str().unwrap().to_owned();
    let sessions = app.get("/v1/sessions", Some(&laptop)).await;
    assert_eq!(sessions.body["items"].as_array().unwrap().len(), 2);
    assert!(!sessions.body.to_string().contains("refresh_token"));

    // Profiles.
    let me = app.get("/v1/me", Some(&alice)).await;
    assert_eq!(me.body["email"], "alice@example.com");
    let them = app.get(&format!("/v1/users/{alice_id}"), Some(&bob)).await;
    assert!(them.body.get("email").is_none(), "email only to its owner");
    let by_name = app.get("/v1/users/by-username/ALICE", None).await;
    assert_eq!(by_name.body["id"], alice_id);
    let changed = app
        .call(
            Method::PATCH,
            "/v1/me",
            Some(&alice),
            Some(json!({"full_name": "Alice A.", "bio": "hi"})),
        )
        .await;
    assert_eq!(changed.body["full_name"], "Alice A.", "{}", changed.body);
    let password = app
        .call(
            Method::PUT,
            "/v1/me/password",
            Some(&alice),
            Some(json!({"old_password": "correct horse battery", "new_password": "another long password"})),
        )
        .await;
    assert_eq!(password.status, StatusCode::NO_CONTENT, "{}", password.body);

    // Posts with media, authors embedded.
    let post = app
        .post("/v1/posts", Some(&bob), json!({"content": "the lake", "media": [
                {"type": "image", "url": "https://cdn.example.com/a.jpg", "width": 10, "height": 10},
                {"type": "video", "url": "https://cdn.example.com/a.mp4", "width": 10, "height": 10, "duration": 3.5}
            ]}))
        .await;
    assert_eq!(post.status, StatusCode::CREATED, "{}", post.body);
    let post_id = post.body["id"].as_str().unwrap().to_owned();
    assert_eq!(post.header("location").unwrap(), format!("/v1/posts/{post_id}"));
    assert_eq!(post.body["author"]["username"], "bob");
    assert_eq!(post.body["media"][1]["duration"], 3.5);
    let got = app.get(&format!("/v1/posts/{post_id}"), None).await;
    assert_eq!(got.body["author"]["id"], bob_id);
    let edited = app
        .call(
            Method::PATCH,
            &format!("/v1/posts/{post_id}"),
            Some(&bob),
            Some(json!({"content": "the lake, at dawn"})),
        )
        .await;
    assert_eq!(edited.body["content"], "the lake, at dawn", "{}", edited.body);
    assert_eq!(edited.body["media"].as_array().unwrap().len(), 2);
    let timeline = app.get(&format!("/v1/users/{bob_id}/posts"), None).await;
    assert_eq!(timeline.body["items"][0]["author"]["username"], "bob");

    // Follows and the feed.
    let follow = app.put(&format!("/v1/users/{bob_id}/follow"), &alice).await;
    assert_eq!(follow.status, StatusCode::OK, "{}", follow.body);
    let again = app.put(&format!("/v1/users/{bob_id}/follow"), &alice).await;
    assert_eq!(again.status, StatusCode::OK, "idempotent");
    let followers = app.get(&format!("/v1/users/{bob_id}/followers"), None).await;
    assert_eq!(followers.body["items"][0]["account"]["username"], "alice");
    let following = app.get(&format!("/v1/users/{alice_id}/following"), None).await;
    assert_eq!(following.body["items"][0]["account"]["username"], "bob");
    let rel = app.get(&format!("/v1/users/{bob_id}/relationship"), Some(&alice)).await;
    assert_eq!(
        rel.body,
        json!({"following": true, "followed_by": false, "blocking": false, "blocked_by": false, "muting": false})
    );
    let feed = app.get("/v1/feed", Some(&alice)).await;
    assert_eq!(feed.body["items"][0]["id"], post_id);
    assert_eq!(feed.body["items"][0]["author"]["username"], "bob");

    // Likes and comments.
    for _ in 0..2 {
        let like = app.put(&format!("/v1/posts/{post_id}/like"), &alice).await;
        assert_eq!(like.status, StatusCode::NO_CONTENT, "{}", like.body);
    }
    let likes = app.get(&format!("/v1/posts/{post_id}/likes"), None).await;
    assert_eq!(likes.body["items"][0]["account"]["username"], "alice");
    let comment = app
        .post(
            &format!("/v1/posts/{post_id}/comments"),
            Some(&alice),
            json!({"content": "lovely, @bob"}),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
    let comment_id = comment.body["id"].as_str().unwrap().to_owned();
    assert_eq!(comment.header("location").unwrap(), format!("/v1/comments/{comment_id}"));
    // Every Location resolves.
    for created in [&post, &comment] {
        let at = app.get(created.header("location").unwrap(), None).await;
        assert_eq!(at.status, StatusCode::OK, "{}", at.body);
        assert_eq!(at.body["id"], created.body["id"]);
        assert_eq!(at.body["author"]["username"], created.body["author"]["username"]);
    }
    let comments = app.get(&format!("/v1/posts/{post_id}/comments"), None).await;
    assert_eq!(comments.body["items"][0]["author"]["username"], "alice");
    let edited = app
        .call(
            Method::PATCH,
            &format!("/v1/comments/{comment_id}"),
            Some(&alice),
            Some(json!({"content": "lovely!"})),
        )
        .await;
    assert_eq!(edited.body["content"], "lovely!", "{}", edited.body);
    for method in [Method::PUT, Method::DELETE] {
        let a =
            app.call(method, &format!("/v1/comments/{comment_id}/like"), Some(&bob), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    }
    let counted = app
        .eventually(&format!("/v1/posts/{post_id}"), &bob, |p| {
            p["likes_count"] == 1 && p["comments_count"] == 1
        })
        .await;
    assert_eq!(counted["author"]["username"], "bob");

    // Notifications: who acted is embedded.
    let notes = app
        .eventually("/v1/notifications", &bob, |n| {
            n["items"].as_array().is_some_and(|i| i.len() >= 4)
        })
        .await;
    let items = notes["items"].as_array().unwrap();
    assert!(items.iter().all(|n| n["account"]["username"] == "alice"), "{notes}");
    let types: Vec<&str> = items.iter().map(|n| n["type"].as_str().unwrap()).collect();
    for t in ["FOLLOW", "POST_LIKE", "POST_COMMENT", "MENTION"] {
        assert!(types.contains(&t), "{types:?}");
    }
    let only = app.get("/v1/notifications?types=MENTION,FOLLOW", Some(&bob)).await;
    assert_eq!(only.body["items"].as_array().unwrap().len(), 2, "{}", only.body);
    let unread = app.get("/v1/notifications/unread-count", Some(&bob)).await;
    assert_eq!(unread.body["count"], 4);
    let one = items[0]["id"].clone();
    let read = app.post("/v1/notifications/read", Some(&bob), json!({"ids": [one]})).await;
    assert_eq!(read.body["updated_count"], 1, "{}", read.body);
    let all = app.call(Method::POST, "/v1/notifications/read-all", Some(&bob), None).await;
    assert_eq!(all.body["updated_count"], 3, "{}", all.body);

    // Undo everything.
    let unlike = app.delete(&format!("/v1/posts/{post_id}/like"), &alice).await;
    assert_eq!(unlike.status, StatusCode::NO_CONTENT);
    let gone = app.delete(&format!("/v1/comments/{comment_id}"), &bob).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "the post's author may");
    let unfollow = app.delete(&format!("/v1/users/{bob_id}/follow"), &alice).await;
    assert_eq!(unfollow.status, StatusCode::NO_CONTENT);
    let deleted = app.delete(&format!("/v1/posts/{post_id}"), &bob).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get(&format!("/v1/posts/{post_id}"), None).await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // Sessions again: the password change ended the laptop's; a phone logs in, and is
    // revoked from the first session, which then logs out.
    let phone = app
        .post("/v1/sessions", None, json!({"username_or_email": "alice", "password": "another long password", "device": "phone"}))
        .await;
    assert_eq!(phone.status, StatusCode::CREATED, "{}", phone.body);
    let sessions = app.get("/v1/sessions", Some(&alice)).await;
    let items = sessions.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", sessions.body);
    let other = items.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(other["device"], "phone");
    let revoked =
        app.delete(&format!("/v1/sessions/{}", other["id"].as_str().unwrap()), &alice).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let others = app.call(Method::POST, "/v1/sessions/revoke-others", Some(&alice), None).await;
    assert_eq!(others.status, StatusCode::OK, "{}", others.body);
    let out = app.delete("/v1/sessions/current", &alice).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = app
        .post("/v1/sessions/refresh", None, json!({"refresh_token": phone.body["refresh_token"]}))
        .await;
    after.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let bye = app
        .call(
            Method::DELETE,
            "/v1/me",
            Some(&bob),
            Some(json!({"password": "correct horse battery"})),
        )
        .await;
    assert_eq!(bye.status, StatusCode::NO_CONTENT, "{}", bye.body);
    app.get(&format!("/v1/users/{bob_id}"), None).await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn blocks_and_mutes_through_http() {
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let (bob_id, bob) = app.sign_up("bob").await;
    let follow_alice = format!("/v1/users/{alice_id}/follow");
    let followed = app.put(&follow_alice, &bob).await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.body);

    let block = format!("/v1/users/{bob_id}/block");
    let blocked = app.call(Method::POST, &block, Some(&alice), None).await;
    assert_eq!(blocked.status, StatusCode::OK, "{}", blocked.body);
    assert_eq!(blocked.body["blocked_id"], bob_id);
    let again = app.call(Method::POST, &block, Some(&alice), None).await;
    assert_eq!(again.body["created_at"], blocked.body["created_at"]);
    let list = app.get("/v1/blocks", Some(&alice)).await;
    assert_eq!(list.body["items"][0]["account"]["username"], "bob", "{}", list.body);
    let rel = app.get(&format!("/v1/users/{alice_id}/relationship"), Some(&bob)).await;
    assert_eq!(
        rel.body,
        json!({"following": false, "followed_by": false, "blocking": false, "blocked_by": true, "muting": false})
    );

    // To bob, alice is absent, and he cannot follow her again; she must unblock first.
    let profile = format!("/v1/users/{alice_id}");
    let hidden = social_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let got = app.get(&profile, Some(&bob)).await;
        (got.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(hidden.is_some(), "alice's profile stays visible to bob");
    let refused = app.put(&follow_alice, &bob).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    let follow_bob = format!("/v1/users/{bob_id}/follow");
    let refused = app.put(&follow_bob, &alice).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.body["error"]["status"], "FAILED_PRECONDITION", "{}", refused.body);
    let own =
        app.call(Method::POST, &format!("/v1/users/{alice_id}/block"), Some(&alice), None).await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST, "{}", own.body);

    let unblock = format!("/v1/users/{bob_id}/unblock");
    let done = app.call(Method::POST, &unblock, Some(&alice), None).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    let list = app.get("/v1/blocks", Some(&alice)).await;
    assert_eq!(list.body["items"], json!([]));
    let followed = app.put(&follow_alice, &bob).await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.body);
    let unauthenticated = app.call(Method::POST, &block, None, None).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);

    // A mute, for an hour, the notifications left on: bob notices nothing.
    let mute = format!("/v1/users/{bob_id}/mute");
    let settings = json!({"duration_seconds": 3600, "notifications": false});
    let muted = app.call(Method::POST, &mute, Some(&alice), Some(settings)).await;
    assert_eq!(muted.status, StatusCode::OK, "{}", muted.body);
    assert_eq!(muted.body["notifications"], false);
    assert!(muted.body["expires_at"].is_string(), "{}", muted.body);
    let list = app.get("/v1/mutes", Some(&alice)).await;
    assert_eq!(list.body["items"][0]["account"]["username"], "bob", "{}", list.body);
    let rel = app.get(&format!("/v1/users/{alice_id}/relationship"), Some(&bob)).await;
    assert_eq!(rel.body["muting"], false, "{}", rel.body);
    let bad = json!({"duration_seconds": 5});
    let refused = app.call(Method::POST, &mute, Some(&alice), Some(bad)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let unmute = format!("/v1/users/{bob_id}/unmute");
    let done = app.call(Method::POST, &unmute, Some(&alice), None).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    assert_eq!(app.get("/v1/mutes", Some(&alice)).await.body["items"], json!([]));
}

#[tokio::test]
async fn a_report_through_http_reaches_a_moderator_who_removes_the_post() {
    let app = App::start().await;
    let (_, alice) = app.sign_up("alice").await;
    let (_, bob) = app.sign_up("bob").await;
    let (_, moder) = app.sign_up("moder").await;
    let post = app.post("/v1/posts", Some(&bob), json!({"content": "spam spam"})).await;
    let post_id = post.body["id"].as_str().unwrap().to_owned();
    let report =
        json!({"target_type": "post", "target_id": post_id, "category": "SPAM", "comment": "ads"});
    let filed = app.call(Method::POST, "/v1/reports", Some(&alice), Some(report)).await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    assert_eq!(filed.body["status"], "open");
    let bad = json!({"target_type": "planet", "target_id": post_id, "category": "SPAM"});
    let refused = app.call(Method::POST, "/v1/reports", Some(&alice), Some(bad)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // Only a moderator reads the queue and resolves.
    let denied = app.get("/v1/admin/reports", Some(&alice)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    let config = social_user::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &app.stack.database,
        app.stack.events.clone(),
    );
    social_user::set_role(&config, "moder", "moderator").await.unwrap();
    let queue = app.get("/v1/admin/reports", Some(&moder)).await;
    assert_eq!(queue.body["items"][0]["post"]["content"], "spam spam", "{}", queue.body);
    let resolve = format!("/v1/admin/reports/{}/resolve", filed.body["id"].as_str().unwrap());
    let done = app.post(&resolve, Some(&moder), json!({"action": "remove"})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["resolution"], "removed");
    let gone = app.get(&format!("/v1/posts/{post_id}"), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let queue = app.get("/v1/admin/reports", Some(&moder)).await;
    assert_eq!(queue.body["items"], json!([]));
}

#[tokio::test]
async fn every_error_has_one_shape() {
    let app = App::start().await;
    let (_, alice) = app.sign_up("alice").await;
    let (bob_id, bob) = app.sign_up("bob").await;
    // A route with a method it does not take: 405 in the shape, with Allow.
    let wrong = app.call(Method::PATCH, "/v1/feed", Some(&alice), None).await;
    wrong.error(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED");
    assert_eq!(wrong.header("allow"), Some("GET,HEAD"));
    // Validation names each bad field.
    let bad = app
        .post("/v1/accounts", None, json!({"username": "a!", "email": "nope", "password": "short"}))
        .await;
    assert_eq!(
        bad.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ["username", "email", "password"]
    );
    // Unknown fields are named; malformed JSON is a 400, never a 500 or plain text.
    let unknown =
        app.post("/v1/posts", Some(&alice), json!({"content": "x", "colour": "red"})).await;
    assert_eq!(unknown.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["colour"]);
    let malformed = app
        .http
        .post(app.url("/v1/posts"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let shape: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(shape["error"]["status"], "INVALID_ARGUMENT");
    // A body is an object: an array of the fields in order, or of none where every field
    // has a default, is no body of defaults.
    for body in [json!([]), json!([0, false]), json!(null), json!("x"), json!(3)] {
        let muted = app.post(&format!("/v1/users/{bob_id}/mute"), Some(&alice), body.clone()).await;
        assert_eq!(muted.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["body"], "{body}");
    }
    // Nor is a list of a body's objects a list of arrays, nor one of its words an object.
    let media = json!([["image", "https://cdn.example.com/a.jpg", "", 10, 10]]);
    let post = app.post("/v1/posts", Some(&alice), json!({ "content": "x", "media": media })).await;
    assert_eq!(post.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["media[0]"]);
    let report = json!({"target_type": {"account": null}, "target_id": bob_id, "category": "SPAM"});
    let reported = app.post("/v1/reports", Some(&alice), report).await;
    assert_eq!(reported.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["target_type"]);
    // What the API document bounds is bounded as sent, surrounding whitespace included;
    // an id is lowercase hex.
    let padded = format!(" {}", "x".repeat(1000));
    let report = json!({"target_type": "account", "target_id": bob_id, "category": "SPAM", "comment": padded});
    let reported = app.post("/v1/reports", Some(&alice), report).await;
    assert_eq!(reported.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["comment"]);
    let picture = json!({ "profile_picture_url": " ".repeat(2049) });
    let changed = app.call(Method::PATCH, "/v1/me", Some(&alice), Some(picture)).await;
    assert_eq!(
        changed.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ["user.profile_picture_url"]
    );
    let signup = json!({"username": " carol_1", "email": "carol@example.com", "password": "correct horse battery"});
    let signed = app.post("/v1/accounts", None, signup).await;
    assert_eq!(signed.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["username"]);
    let upper = bob_id.to_uppercase().replace(char::is_numeric, "A");
    let followed =
        app.call(Method::PUT, &format!("/v1/users/{upper}/follow"), Some(&alice), None).await;
    followed.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    // What an error repeats of a request is short, however long what was sent.
    let long = "x".repeat(10_000);
    let answers = [
        app.get(&format!("/v1/notifications?types={long}"), Some(&alice)).await,
        app.post("/v1/posts", Some(&alice), json!({ "content": 5, long.clone(): 1 })).await,
        app.post("/v1/posts", Some(&alice), json!({ "content": long.repeat(5) })).await,
        app.post("/v1/posts", Some(&alice), json!({ "content": [long.clone()] })).await,
    ];
    for a in answers {
        a.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
        assert!(a.body.to_string().len() < 1500, "{}", a.body);
    }
    let query = app.get("/v1/users/6b0954dcc3ddd33507e1a6ca/posts?page_size=-1", None).await;
    assert_eq!(query.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["page_size"]);
    let query = app.get("/v1/users/6b0954dcc3ddd33507e1a6ca/posts?page_size=many", None).await;
    query.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    app.get("/v1/posts/not-an-id", None).await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    // Who may do what.
    app.post("/v1/posts", None, json!({"content": "x"}))
        .await
        .error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // A route that needs an account asks for it first: without a token, a bad body or
    // page is a 401 too, not a lesson in the route's fields.
    let bad_body = Some(json!({"content": 5}));
    app.call(Method::POST, "/v1/posts", None, bad_body)
        .await
        .error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    for path in ["/v1/feed?page_size=many", "/v1/notifications?types=BAD"] {
        app.get(path, None).await.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    app.call(Method::DELETE, "/v1/posts/%FF", None, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    app.get("/v1/feed", Some("not a token"))
        .await
        .error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let post = app.post("/v1/posts", Some(&alice), json!({"content": "mine"})).await;
    let id = post.body["id"].as_str().unwrap();
    app.delete(&format!("/v1/posts/{id}"), &bob)
        .await
        .error(StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    app.get("/v1/posts/6b0954dcc3ddd33507e1a6ca", None)
        .await
        .error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let taken = app
        .post("/v1/accounts", None, json!({"username": "ALICE", "email": "x@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(taken.error(StatusCode::CONFLICT, "ALREADY_EXISTS"), ["username"]);
    app.get("/v1/no/such/route", None).await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // A body larger than any valid request.
    let huge = json!({"content": "x".repeat(200_000)});
    app.call(Method::POST, "/v1/posts", Some(&alice), Some(huge))
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_ARGUMENT");
    // Wrong passwords: 401, then 429 with Retry-After once throttled.
    let mut last = None;
    for _ in 0..6 {
        last = Some(
            app.post(
                "/v1/sessions",
                None,
                json!({"username_or_email": "alice", "password": "wrong password"}),
            )
            .await,
        );
    }
    let last = last.unwrap();
    last.error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    assert!(last.header("retry-after").is_some());
}

#[tokio::test]
async fn pages_carry_their_next_token_and_a_link() {
    let app = App::start().await;
    let (bob_id, bob) = app.sign_up("bob").await;
    for i in 0..3 {
        app.post("/v1/posts", Some(&bob), json!({"content": format!("p{i}")})).await;
    }
    let first = app.get(&format!("/v1/users/{bob_id}/posts?page_size=2"), None).await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let token = first.body["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let link = first.header("link").unwrap();
    assert!(link.contains("page_size=2") && link.ends_with("rel=\"next\""), "{link}");
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let second = app.get(next, None).await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["next_page_token"], "");
    assert!(second.header("link").is_none());
}

/// The next page's link repeats the request's filters as the handler read them: a space
/// written `+` stays a space, an escaped name (`page%5Ftoken`) is the parameter it names.
#[tokio::test]
async fn a_pages_link_repeats_its_filters_as_the_handler_read_them() {
    let app = App::start().await;
    let (bob_id, bob) = app.sign_up("bob").await;
    for name in ["carol", "dave", "erin"] {
        let (_, token) = app.sign_up(name).await;
        app.put(&format!("/v1/users/{bob_id}/follow"), &token).await;
    }
    let all = |n: &Value| n["items"].as_array().is_some_and(|items| items.len() == 3);
    app.eventually("/v1/notifications", &bob, all).await;
    let filters = "unread_only=true&types=FOLLOW%2C+MENTION";
    let first = app.get(&format!("/v1/notifications?page%5Fsize=1&{filters}"), Some(&bob)).await;
    let token = first.body["next_page_token"].as_str().unwrap();
    let second = format!("/v1/notifications?page%5Fsize=1&page%5Ftoken={token}&{filters}");
    let second = app.get(&second, Some(&bob)).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let link = second.header("link").unwrap();
    assert!(link.contains(filters), "{link}");
    let third = link.trim_start_matches('<').split('>').next().unwrap();
    let third = app.get(third, Some(&bob)).await;
    assert_eq!(third.status, StatusCode::OK, "{link}: {}", third.body);
    let ids = |a: &Answer| a.body["items"][0]["id"].as_str().unwrap().to_owned();
    let seen = [ids(&first), ids(&second), ids(&third)];
    assert!(seen[0] != seen[1] && seen[1] != seen[2] && seen[0] != seen[2], "{seen:?}");
    assert_eq!(third.body["next_page_token"], "");
}

#[tokio::test]
async fn authors_and_actors_come_in_one_batch_per_page() {
    let stack = Stack::start().await;
    let users = RpcCounter::start(stack.user.addr).await;
    let app = App::around(stack, |c| c.user_service = users.peer("user service")).await;
    let batch = "/social.user.v1.UserService/BatchGetUsers";
    let (_, alice) = app.sign_up("alice").await;
    let mut authors = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let (id, token) = app.sign_up(name).await;
        app.put(&format!("/v1/users/{id}/follow"), &alice).await;
        for i in 0..3 {
            let p = app
                .post("/v1/posts", Some(&token), json!({"content": format!("{name} {i}")}))
                .await;
            assert_eq!(p.status, StatusCode::CREATED);
        }
        authors.push((id, token));
    }
    users.take(batch);
    let feed = app.get("/v1/feed?page_size=9", Some(&alice)).await;
    let items = feed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 9);
    assert!(items.iter().all(|p| p["author"]["username"].is_string()), "{}", feed.body);
    assert_eq!(users.take(batch), 1, "nine posts by three authors: one call");

    let notes = app
        .eventually("/v1/notifications", &authors[0].1, |n| {
            n["items"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    assert_eq!(notes["items"][0]["account"]["username"], "alice");
    users.take(batch);
    app.get("/v1/notifications", Some(&authors[0].1)).await;
    assert_eq!(users.take(batch), 1);
    let me = app.get("/v1/me", Some(&alice)).await;
    users.take(batch);
    let following =
        app.get(&format!("/v1/users/{}/following", me.body["id"].as_str().unwrap()), None).await;
    assert_eq!(following.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(users.take(batch), 1);
}

#[tokio::test]
async fn an_account_exports_as_one_json_record_per_line() {
    let app = App::start_with(|c| c.rates.export = social_gateway::Rate::per(1, 3600)).await;
    let (_, alice) = app.sign_up("alice").await;
    let (bob_id, _) = app.sign_up("bob").await;
    let post = app.post("/v1/posts", Some(&alice), json!({"content": "mine"})).await;
    let post_id = post.body["id"].as_str().unwrap().to_owned();
    let comment = app
        .post(
            &format!("/v1/posts/{post_id}/comments"),
            Some(&alice),
            json!({"content": "and my comment"}),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
    let like = format!("/v1/posts/{post_id}/like");
    assert!(app.put(&like, &alice).await.status.is_success());
    let follow = format!("/v1/users/{bob_id}/follow");
    assert!(app.put(&follow, &alice).await.status.is_success());

    let export = app.http.get(app.url("/v1/me/export")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["profile"]["email"], "alice@example.com", "{text}");
    let kinds: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l.as_object()?.keys().next().map(String::as_str)).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["comment", "follow", "like", "post", "profile"],
        "{text}"
    );
    assert!(text.contains("and my comment"));
    // It reads everything of the account: a limit of its own, per account.
    let again = app.get("/v1/me/export", Some(&alice)).await;
    again.error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    assert!(app.get("/v1/me", Some(&alice)).await.status.is_success());
    // Nobody else's: it needs a token.
    app.get("/v1/me/export", None).await.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}
