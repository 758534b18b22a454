//! The live stream as Server-Sent Events, and its resume with `Last-Event-ID`.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{App, RpcCounter};
use social_testkit::Stack;

/// One SSE event.
#[derive(Debug)]
struct Event {
    kind: String,
    id: String,
    data: Value,
}

/// An open stream, parsed as it arrives.
struct Sse {
    bytes: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Sse {
    /// Opens the caller's stream (retrying while the service's live feed is starting).
    async fn open(app: &App, token: &str, last: Option<&str>) -> Self {
        Self::open_at(app, "/v1/notifications/stream", token, last).await
    }

    async fn open_at(app: &App, path: &str, token: &str, last: Option<&str>) -> Self {
        Self::open_by(|| async {
            let mut request = app.http.get(app.url(path)).bearer_auth(token);
            if let Some(last) = last {
                request = request.header("last-event-id", last);
            }
            request
        })
        .await
    }

    /// Opens the stream as a browser does: a new ticket (asked for with `token`) in the
    /// query, each time it tries, and the resume point, if any, in the query too.
    async fn open_with_ticket(app: &App, token: &str, last: Option<&str>) -> Self {
        Self::open_by(|| async {
            let ticket =
                app.call(Method::POST, "/v1/notifications/stream-tickets", Some(token), None).await;
            assert_eq!(ticket.status, StatusCode::CREATED, "{}", ticket.body);
            let mut query = vec![("ticket", ticket.body["ticket"].as_str().unwrap().to_owned())];
            query.extend(last.map(|l| ("last_event_id", l.to_owned())));
            app.http.get(app.url("/v1/notifications/stream")).query(&query)
        })
        .await
    }

    async fn open_by<F: std::future::Future<Output = reqwest::RequestBuilder>>(
        request: impl Fn() -> F,
    ) -> Self {
        for _ in 0..100 {
            let response = request().await.send().await.unwrap();
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            return Self {
                bytes: response.bytes_stream().map(|c| c.map(|b| b.to_vec())).boxed(),
                buffer: String::new(),
            };
        }
        panic!("the stream never opened");
    }

    /// The next event (comments skipped), or `None` after `wait` without one.
    async fn next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut kind, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive
                }
                return Some(Event { kind, id, data: serde_json::from_str(&data).unwrap() });
            }
            let chunk = tokio::time::timeout_at(deadline, self.bytes.next()).await.ok()??;
            self.buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }

    /// Whether the stream ends (the server closes it) within `wait`.
    async fn ends_within(&mut self, wait: Duration) -> bool {
        let drained = async { while let Some(Ok(_)) = self.bytes.next().await {} };
        tokio::time::timeout(wait, drained).await.is_ok()
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::new();
        while events.len() < n {
            let e = self.next(Duration::from_secs(15)).await;
            events.push(e.unwrap_or_else(|| panic!("only {events:?} of {n}")));
        }
        events
    }
}

/// Stores notifications of `recipient` straight into the stack's collection, as the
/// service stores them: one per `(actor, created_at in ms)`, of `kind` (`FOLLOW`,
/// `POST_LIKE`), about `post` if any. Their ids.
async fn seed(
    app: &App,
    recipient: &str,
    kind: &str,
    post: Option<bson::oid::ObjectId>,
    from: impl IntoIterator<Item = (bson::oid::ObjectId, i64)>,
) -> Vec<String> {
    use bson::{DateTime, doc, oid::ObjectId};
    let owner: ObjectId = recipient.parse().unwrap();
    let about = post.map_or_else(|| recipient.to_owned(), |p| p.to_hex());
    let docs: Vec<_> = from
        .into_iter()
        .map(|(actor, ms)| {
            let at = DateTime::from_millis(ms);
            let mut d = doc! {
                "_id": ObjectId::new(), "user_id": owner, "type": kind,
                "source_user_id": actor, "is_read": false,
                "created_at": at, "sort_key": social_kit::paging::sort_key(at),
                "dedupe_key": format!("{}:{actor}:{about}", kind.to_lowercase()), "event_id": "",
            };
            if let Some(post) = post {
                d.insert("post_id", post);
            }
            d
        })
        .collect();
    let ids = docs.iter().map(|d| d.get_object_id("_id").unwrap().to_hex()).collect();
    app.stack
        .database()
        .await
        .collection::<bson::Document>("notifications")
        .insert_many(docs)
        .await
        .unwrap();
    ids
}

#[tokio::test]
async fn the_stream_delivers_live_and_resumes_without_gap_or_duplicate() {
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let (_, bob) = app.sign_up("bob").await;
    let (_, carol) = app.sign_up("carol").await;
    let post = app.post("/v1/posts", Some(&alice), json!({"content": "hello"})).await;
    let post_id = post.body["id"].as_str().unwrap().to_owned();

    let mut stream = Sse::open(&app, &alice, None).await;
    let follow = format!("/v1/users/{alice_id}/follow");
    app.put(&follow, &bob).await;
    let first = stream.take(1).await;
    assert_eq!(first[0].kind, "notification");
    assert_eq!(first[0].data["type"], "FOLLOW");
    assert_eq!(first[0].data["account"]["username"], "bob", "who acted, embedded");
    assert!(first[0].id.starts_with(first[0].data["id"].as_str().unwrap()));

    // Offline for a while: two things happen.
    drop(stream);
    app.put(&follow, &carol).await;
    let like = format!("/v1/posts/{post_id}/like");
    app.put(&like, &bob).await;
    app.eventually("/v1/notifications", &alice, |n| {
        n["items"].as_array().is_some_and(|i| i.len() == 3)
    })
    .await;

    // Back with the last id: the two missed, oldest first, then live ones; the one it
    // had is not sent again.
    let mut stream = Sse::open(&app, &alice, Some(&first[0].id)).await;
    let missed = stream.take(2).await;
    let kinds: Vec<&str> = missed.iter().map(|e| e.data["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["FOLLOW", "POST_LIKE"]);
    assert_eq!(missed[0].data["account"]["username"], "carol");
    app.put(&like, &carol).await;
    let live = stream.take(1).await;
    assert_eq!(live[0].data["type"], "POST_LIKE");
    assert_eq!(live[0].data["account"]["username"], "carol");
    assert!(stream.next(Duration::from_secs(2)).await.is_none(), "nothing twice");

    // A resume from the newest id sends nothing old, even from the same second.
    drop(stream);
    let mut stream = Sse::open(&app, &alice, Some(&live[0].id)).await;
    assert!(stream.next(Duration::from_secs(2)).await.is_none());

    // A notification whose comment is deleted is removed, and the stream says so.
    let comment = app
        .post(&format!("/v1/posts/{post_id}/comments"), Some(&bob), json!({"content": "nice"}))
        .await;
    let added = stream.take(1).await;
    assert_eq!(added[0].data["type"], "POST_COMMENT");
    let comment_id = comment.body["id"].as_str().unwrap();
    app.delete(&format!("/v1/comments/{comment_id}"), &bob).await;
    let removed = stream.take(1).await;
    assert_eq!(removed[0].kind, "removed");
    assert_eq!(removed[0].data["id"], added[0].data["id"]);
}

#[tokio::test]
async fn a_stream_needs_a_valid_token() {
    let app = App::start().await;
    let a = app.get("/v1/notifications/stream", None).await;
    a.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let a = app.get("/v1/notifications/stream", Some("forged")).await;
    a.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // A forged resume point is only a hint: it cannot reach another's notifications.
    // Bob has one from a moment ago; alice resumes from points before it, which would
    // replay it if the resume read anyone's list but hers.
    let (_, alice) = app.sign_up("alice").await;
    let (bob_id, bob) = app.sign_up("bob").await;
    let (_, carol) = app.sign_up("carol").await;
    let follow = format!("/v1/users/{bob_id}/follow");
    app.put(&follow, &carol).await;
    let bobs = app
        .eventually("/v1/notifications", &bob, |n| {
            n["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await;
    assert_eq!(bobs["items"][0]["type"], "FOLLOW");
    let a_while_ago = bson::DateTime::now().timestamp_millis() - 30_000;
    for forged in [format!("x.{a_while_ago}."), "x.99999999999999.y,z".to_owned()] {
        let mut stream = Sse::open(&app, &alice, Some(&forged)).await;
        let leaked = stream.next(Duration::from_secs(1)).await;
        assert!(leaked.is_none(), "{forged}: {leaked:?}");
    }
}

#[tokio::test]
async fn a_resume_hydrates_more_actors_than_one_batch_holds() {
    use bson::{DateTime, oid::ObjectId};
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let (bob_id, _) = app.sign_up("bob").await;
    // 150 notifications in the last minute, each from another account (bob's is the
    // newest), stored while alice was away.
    let now = DateTime::now().timestamp_millis();
    let from = (0..150_i64).map(|i| {
        let actor = if i == 0 { bob_id.parse().unwrap() } else { ObjectId::new() };
        (actor, now - 20_000 - i * 10)
    });
    seed(&app, &alice_id, "FOLLOW", None, from).await;
    // Back with a resume point from before them: all 150, oldest first, bob's last.
    let last = format!("{}.{}.", ObjectId::new(), now - 30_000);
    let mut stream = Sse::open(&app, &alice, Some(&last)).await;
    let missed = stream.take(150).await;
    assert_eq!(missed[149].data["account"]["username"], "bob");
    assert!(
        missed[..149].iter().all(|e| e.data["account"].is_null()),
        "unknown accounts are absent"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_stream_even_when_nothing_happens() {
    let stack = Stack::start().await;
    let notifications = RpcCounter::start(stack.notification.addr).await;
    let app = App::around(stack, |c| {
        c.notification_service = notifications.peer("notification service");
    })
    .await;
    let (_, alice) = app.sign_up("alice").await;
    let stream = Sse::open(&app, &alice, None).await;
    assert_eq!(notifications.open_streams(), 1);
    drop(stream);
    let freed = social_testkit::eventually(Duration::from_secs(5), || async {
        (notifications.open_streams() == 0).then_some(())
    })
    .await;
    assert!(freed.is_some(), "the gateway still holds the service's stream");
}

#[tokio::test]
async fn streams_past_an_accounts_cap_are_refused_until_one_closes() {
    let app = App::start_with(|c| {
        c.streams =
            social_gateway::StreamCaps { per_account: 2, per_address: 3, ..Default::default() };
    })
    .await;
    let (_, alice) = app.sign_up("alice").await;
    let (_, bob) = app.sign_up("bob").await;
    let first = Sse::open(&app, &alice, None).await;
    let _second = Sse::open(&app, &alice, None).await;
    // (A stream that opens would never end: each refusal is awaited for a while only.)
    let refused = |token: String| {
        let app = &app;
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                app.get("/v1/notifications/stream", Some(&token)),
            )
            .await
            .expect("the stream opened")
        }
    };
    let refused_alice = refused(alice.clone()).await;
    refused_alice.error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    assert!(refused_alice.header("retry-after").is_some());
    // Another account has its own, until the address is full.
    let _bobs = Sse::open(&app, &bob, None).await;
    let refused = refused(bob.clone()).await;
    refused.error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    assert!(
        refused.body["error"]["message"].as_str().is_some_and(|m| m.contains("address")),
        "{}",
        refused.body
    );
    // A closed stream gives its place back.
    drop(first);
    let reopened = social_testkit::eventually(Duration::from_secs(5), || async {
        let a = app
            .http
            .get(app.url("/v1/notifications/stream"))
            .bearer_auth(&alice)
            .send()
            .await
            .ok()?;
        (a.status() == StatusCode::OK).then_some(a)
    })
    .await;
    assert!(reopened.is_some(), "the closed stream's place was not given back");
}

#[tokio::test]
async fn an_unreadable_resume_point_gets_a_resync_whose_id_moves_the_client_on() {
    let app = App::start().await;
    let (_, alice) = app.sign_up("alice").await;
    let mut stream = Sse::open(&app, &alice, Some("not a resume point")).await;
    let first = stream.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(first.kind, "resync");
    assert!(!first.id.is_empty(), "a resync carries a resume point");
    drop(stream);
    // Back with it: nothing to catch up on, no resync again.
    let mut stream = Sse::open(&app, &alice, Some(&first.id)).await;
    let next = stream.next(Duration::from_secs(1)).await;
    assert!(next.is_none(), "{next:?}");
}

#[tokio::test]
async fn a_resume_pays_for_the_pages_it_reads() {
    use bson::{DateTime, oid::ObjectId};
    // One request a minute: opening the stream spends it.
    let app = App::start_with(|c| c.rates.account = social_gateway::Rate::per(1, 60)).await;
    let (alice_id, alice) = app.sign_up("alice").await;
    // 150 notifications missed in the last minute: two pages to read.
    let now = DateTime::now().timestamp_millis();
    let from = (0..150_i64).map(|i| (ObjectId::new(), now - 20_000 - i * 10));
    seed(&app, &alice_id, "FOLLOW", None, from).await;
    let last = format!("{}.{}.", ObjectId::new(), now - 30_000);
    let mut stream = Sse::open(&app, &alice, Some(&last)).await;
    let first = stream.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(first.kind, "resync", "the second page was not paid for");
}

#[tokio::test]
async fn a_post_with_600_notifications_deleted_sends_their_removals_and_the_stream_goes_on() {
    use bson::{DateTime, oid::ObjectId};
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let (_, bob) = app.sign_up("bob").await;
    let post = app.post("/v1/posts", Some(&alice), json!({"content": "going viral"})).await;
    let post_id = post.body["id"].as_str().unwrap().to_owned();
    // 600 likes' notifications of her post (seeded as the service stores them).
    let about: ObjectId = post_id.parse().unwrap();
    let now = DateTime::now().timestamp_millis();
    let from = (0..600_i64).map(|i| (ObjectId::new(), now - 600_000 + i));
    let ids: std::collections::HashSet<String> =
        seed(&app, &alice_id, "POST_LIKE", Some(about), from).await.into_iter().collect();
    let mut stream = Sse::open(&app, &alice, None).await;
    let deleted = app.delete(&format!("/v1/posts/{post_id}"), &alice).await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    // Every removal arrives, in a few events.
    let mut removed = std::collections::HashSet::new();
    let mut events = 0;
    while removed.len() < ids.len() {
        let e = stream
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{} of 600 removals after {events} events", removed.len()));
        events += 1;
        match e.kind.as_str() {
            "removed" => {
                removed.insert(e.data["id"].as_str().unwrap().to_owned());
            }
            "removals" => removed.extend(
                e.data["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned()),
            ),
            other => panic!("{other}: {:?}", e.data),
        }
    }
    assert_eq!(removed, ids);
    assert!(events <= 10, "{events} events for 600 removals");
    // And the stream is still open: the next notification arrives on it.
    let follow = format!("/v1/users/{alice_id}/follow");
    app.put(&follow, &bob).await;
    let next = stream.next(Duration::from_secs(15)).await.expect("the stream goes on");
    assert_eq!(next.kind, "notification");
    assert_eq!(next.data["type"], "FOLLOW");
}

#[tokio::test]
async fn a_removal_missed_while_away_makes_the_resume_a_resync() {
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let (_, bob) = app.sign_up("bob").await;
    let follow = format!("/v1/users/{alice_id}/follow");
    let mut stream = Sse::open(&app, &alice, None).await;
    app.put(&follow, &bob).await;
    let followed = stream.next(Duration::from_secs(15)).await.expect("the follow");
    assert_eq!(followed.data["type"], "FOLLOW");
    drop(stream);
    // While she is away, bob takes it back: the notification goes.
    app.delete(&follow, &bob).await;
    app.eventually("/v1/notifications", &alice, |n| {
        n["items"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // Her resume cannot page a removal: it tells her to reload.
    let mut stream = Sse::open(&app, &alice, Some(&followed.id)).await;
    let first = stream.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(first.kind, "resync");
}

#[tokio::test]
async fn a_resume_point_too_old_to_page_back_to_asks_for_a_resync() {
    let app = App::start().await;
    let (_, alice) = app.sign_up("alice").await;
    let two_days_ago = bson::DateTime::now().timestamp_millis() - 2 * 24 * 3600 * 1000;
    let last = format!("{}.{two_days_ago}.", bson::oid::ObjectId::new());
    let mut stream = Sse::open(&app, &alice, Some(&last)).await;
    let first = stream.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(first.kind, "resync");
}

#[tokio::test]
async fn groups_come_with_their_actors_in_one_batch_stay_live_and_are_marked_read() {
    let stack = Stack::start().await;
    let users = RpcCounter::start(stack.user.addr).await;
    let app = App::around(stack, |c| c.user_service = users.peer("user service")).await;
    let batch = "/social.user.v1.UserService/BatchGetUsers";
    let (_, alice) = app.sign_up("alice").await;
    let post = app.post("/v1/posts", Some(&alice), json!({"content": "like me"})).await;
    let post_id = post.body["id"].as_str().unwrap().to_owned();
    let mut stream = Sse::open_at(&app, "/v1/notifications/stream?groups=true", &alice, None).await;
    let like = format!("/v1/posts/{post_id}/like");
    let mut likers = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let (_, token) = app.sign_up(name).await;
        app.put(&like, &token).await;
        likers.push(token);
    }

    // Live: the notifications as before, and the group's summary as it grows.
    // (version, count) of the group's latest update: updates may come out of order.
    let mut latest = (0, 0);
    while latest.1 != 3 {
        let e = stream.next(Duration::from_secs(15)).await.expect("an event");
        match e.kind.as_str() {
            "group" => {
                assert!(e.id.is_empty(), "group events are not resume points");
                assert_eq!(e.data["post_id"], post_id.as_str());
                let n = e.data["notifications_count"].as_i64().unwrap();
                let samples = e.data["sample_accounts"].as_array().unwrap();
                assert_eq!(samples.len() as i64, n, "{}", e.data);
                latest = latest.max((e.data["version"].as_i64().unwrap(), n));
            }
            "notification" => assert_eq!(e.data["type"], "POST_LIKE"),
            other => panic!("{other}: {:?}", e.data),
        }
    }

    // The grouped list: one line, its actors embedded, in one call for the page.
    users.take(batch);
    let groups = app.get("/v1/notification-groups", Some(&alice)).await;
    assert_eq!(users.take(batch), 1, "one batch of actors per page");
    let items = groups.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", groups.body);
    let g = &items[0];
    assert_eq!(g["type"], "POST_LIKE");
    assert_eq!(g["notifications_count"], 3);
    assert_eq!(g["unread_count"], 3);
    let mut names: Vec<&str> = g["sample_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    let ids: Vec<&Value> =
        g["sample_accounts"].as_array().unwrap().iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        g["sample_account_ids"].as_array().unwrap().iter().collect::<Vec<_>>(),
        "accounts in the order of their ids"
    );
    names.sort_unstable();
    assert_eq!(names, ["bob", "carol", "dave"]);
    let key = g["group_key"].as_str().unwrap();
    let unread = app.get("/v1/notification-groups/unread-count", Some(&alice)).await;
    assert_eq!(unread.body["count"], 1);

    // Another account cannot mark it read; bad keys are named.
    let path = format!("/v1/notification-groups/{key}/read");
    let theirs = app.call(Method::POST, &path, Some(&likers[0]), None).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.body);
    let long = format!("/v1/notification-groups/{}/read", "k".repeat(201));
    let too_long = app.call(Method::POST, &long, Some(&alice), None).await;
    assert_eq!(too_long.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["group_key"]);
    let read = app.call(Method::POST, &path, Some(&alice), None).await;
    assert_eq!(read.body["updated_count"], 3, "{}", read.body);
    let unread = app.get("/v1/notification-groups/unread-count", Some(&alice)).await;
    assert_eq!(unread.body["count"], 0);
    let plain = app.get("/v1/notifications/unread-count", Some(&alice)).await;
    assert_eq!(plain.body["count"], 0, "the per-notification count moved too");
    let groups = app.get("/v1/notification-groups?unread_only=true", Some(&alice)).await;
    assert_eq!(groups.body["items"], json!([]));

    // A like taken back: the group counts two, live; the notification is removed.
    app.delete(&like, &likers[2]).await;
    let mut removed = false;
    loop {
        let e = stream.next(Duration::from_secs(15)).await.expect("an event");
        match e.kind.as_str() {
            "removed" => {
                assert_eq!(e.data["group_key"], key);
                removed = true;
            }
            "group" if e.data["version"].as_i64().unwrap() > latest.0 => {
                assert_eq!(e.data["notifications_count"], 2, "{}", e.data);
                break;
            }
            _ => {}
        }
    }
    assert!(removed, "the removal came before the group's update");
}

#[tokio::test]
async fn a_stopping_gateway_ends_its_streams_at_once() {
    let app = App::start_with(|c| c.common.shutdown_grace = Duration::from_secs(60)).await;
    let (_, alice) = app.sign_up("alice").await;
    let mut stream = Sse::open(&app, &alice, None).await;
    app._gateway.shutdown.cancel();
    assert!(
        stream.ends_within(Duration::from_secs(10)).await,
        "the stream held the gateway's shutdown"
    );
}

#[tokio::test]
async fn a_browser_opens_its_stream_with_a_single_use_ticket_and_resumes_with_a_new_one() {
    let app = App::start().await;
    let (bob_id, bob) = app.sign_up("bob").await;
    let (_, carol) = app.sign_up("carol").await;
    let (_, dave) = app.sign_up("dave").await;
    let tickets = "/v1/notifications/stream-tickets";
    app.call(Method::POST, tickets, None, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let issued = app.call(Method::POST, tickets, Some(&bob), None).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    assert_eq!(issued.body["expires_in"], 30);

    // Opened with a ticket, no Authorization: bob's own notifications.
    let mut stream = Sse::open_with_ticket(&app, &bob, None).await;
    let follow = format!("/v1/users/{bob_id}/follow");
    app.put(&follow, &carol).await;
    let first = stream.next(Duration::from_secs(15)).await.expect("carol's follow");
    assert_eq!(first.kind, "notification");
    drop(stream);

    // A ticket opens one stream: spent, unknown or forged, it is refused.
    let spent = issued.body["ticket"].as_str().unwrap();
    let once = format!("/v1/notifications/stream?ticket={spent}");
    let opened = app.http.get(app.url(&once)).send().await.unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    drop(opened);
    for ticket in [spent, "0123456789abcdef", "not-hex", ""] {
        let path = format!("/v1/notifications/stream?ticket={ticket}");
        let refused = tokio::time::timeout(Duration::from_secs(5), app.get(&path, None))
            .await
            .unwrap_or_else(|_| panic!("ticket {ticket:?} opened a stream"));
        refused.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }

    // Away, dave follows; a new ticket with the last id (in the query) sends it.
    app.put(&follow, &dave).await;
    app.eventually("/v1/notifications", &bob, |n| {
        n["items"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    let mut resumed = Sse::open_with_ticket(&app, &bob, Some(&first.id)).await;
    let missed = resumed.next(Duration::from_secs(15)).await.expect("the missed one");
    assert_eq!(missed.kind, "notification", "{missed:?}");
    assert_ne!(missed.data["id"], first.data["id"], "{missed:?}");
    assert!(resumed.next(Duration::from_secs(1)).await.is_none(), "a duplicate");
}
