//! The edge itself: rate limits and who they count, CORS, request ids, a service that
//! is down, and the OpenAPI document.

use reqwest::{Method, StatusCode};
use social_gateway::Rate;
use social_kit::client::Peer;
use std::time::Duration;

use crate::App;

#[tokio::test]
async fn rate_limits_count_per_address_and_per_account_and_say_when_to_return() {
    let app = App::start_with(|c| {
        c.rates.anonymous = Rate::per(3, 60);
        c.rates.account = Rate::per(5, 60);
        c.rates.signup = Rate::per(2, 3600);
    })
    .await;
    // Signing up has its own, stricter, bucket.
    let (_, alice) = app.sign_up("alice").await;
    let (_, bob) = app.sign_up("bob").await;
    let third = app
        .call(
            Method::POST,
            "/v1/accounts",
            None,
            Some(serde_json::json!({"username": "carol", "email": "c@example.com", "password": "correct horse battery"})),
        )
        .await;
    third.error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");

    // Anonymous: 3 per minute per address, counted down in the headers.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = app.get("/v1/users/by-username/alice", None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("ratelimit-limit"), Some("3"));
        remaining.push(a.header("ratelimit-remaining").unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = app.get("/v1/users/by-username/alice", None).await;
    refused.error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "one request's worth of the minute: {wait}");

    // An account has its own bucket, whatever its address; another account is not
    // slowed by it.
    for _ in 0..5 {
        assert_eq!(app.get("/v1/me", Some(&alice)).await.status, StatusCode::OK);
    }
    app.get("/v1/me", Some(&alice))
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    assert_eq!(app.get("/v1/me", Some(&bob)).await.status, StatusCode::OK);
    // Probes are never limited.
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let forwarded = |app: &App, from: &'static str| {
        app.http.get(app.url("/v1/users/by-username/nobody")).header("x-forwarded-for", from).send()
    };
    // Untrusted: X-Forwarded-For is the client's to forge, so it is ignored.
    let app = App::start_with(|c| c.rates.anonymous = Rate::per(2, 60)).await;
    for from in ["10.0.0.1", "10.0.0.2"] {
        assert_eq!(forwarded(&app, from).await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    let third = forwarded(&app, "10.0.0.3").await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS, "one address, whatever it claims");

    // Behind a trusted proxy: each forwarded client has its own bucket, and a client
    // cannot prepend addresses to escape its own.
    let app = App::start_with(|c| {
        c.rates.anonymous = Rate::per(2, 60);
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        assert_eq!(forwarded(&app, "10.0.0.1").await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    let spoofed = forwarded(&app, "1.2.3.4, 10.0.0.1").await.unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(forwarded(&app, "10.0.0.2").await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn browsers_may_call_from_the_configured_origins_only() {
    let app = App::start().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/v1/posts"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
    let methods = ok.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A cross-origin answer exposes what a client reads: pages' links, rate limits.
    let get = app
        .http
        .get(app.url("/healthz"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    let exposed = get.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert!(exposed.contains("link") && exposed.contains("ratelimit-remaining"), "{exposed}");
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_a_client_s_is_kept() {
    let app = App::start().await;
    let a = app.get("/v1/users/by-username/nobody", None).await;
    assert_eq!(a.header("x-request-id").unwrap().len(), 36);
    let mine = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn a_service_that_is_down_is_a_503_on_its_routes_alone_and_the_gateway_stays_ready() {
    let app = App::start_with(|c| {
        c.post_service = Peer::new(
            "post service",
            "POST_SERVICE_URL",
            "http://127.0.0.1:9",
            Duration::from_secs(1),
        )
        .unwrap();
    })
    .await;
    let (_, alice) = app.sign_up("alice").await;
    let down = app.get("/v1/feed", Some(&alice)).await;
    down.error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(
        down.body["error"]["message"].as_str().unwrap().contains("post service"),
        "{}",
        down.body
    );
    assert!(down.header("retry-after").is_some());
    // The others still answer.
    assert_eq!(app.get("/v1/me", Some(&alice)).await.status, StatusCode::OK);
    // Still in its balancer: the body says what is down.
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["not_serving"], serde_json::json!(["post"]));
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn with_the_notification_service_down_logins_posts_and_feeds_go_on() {
    let stack = social_testkit::Stack::start().await;
    let app = App::around(stack, |c| {
        c.notification_service = Peer::new(
            "notification service",
            "NOTIFICATION_SERVICE_URL",
            "http://127.0.0.1:9",
            Duration::from_secs(1),
        )
        .unwrap();
    })
    .await;
    let (_, alice) = app.sign_up("alice").await;
    let login = app
        .call(
            Method::POST,
            "/v1/sessions",
            None,
            Some(serde_json::json!({"username_or_email": "alice", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
    let post = app
        .call(
            Method::POST,
            "/v1/posts",
            Some(&alice),
            Some(serde_json::json!({"content": "still here"})),
        )
        .await;
    assert_eq!(post.status, StatusCode::CREATED, "{}", post.body);
    let feed = app.get("/v1/feed", Some(&alice)).await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.body);
    app.get("/v1/notifications", Some(&alice))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["not_serving"], serde_json::json!(["notification"]));
}

#[tokio::test]
async fn answers_under_a_kibibyte_go_as_they_are_and_larger_ones_gzipped() {
    let app = App::start().await;
    let (alice_id, alice) = app.sign_up("alice").await;
    let mut short = String::new();
    for content in ["short".to_owned(), "x".repeat(400), "y".repeat(400)] {
        let post = app
            .call(
                Method::POST,
                "/v1/posts",
                Some(&alice),
                Some(serde_json::json!({ "content": content })),
            )
            .await;
        assert_eq!(post.status, StatusCode::CREATED, "{}", post.body);
        if short.is_empty() {
            short = format!("/v1/posts/{}", post.body["id"].as_str().unwrap());
        }
    }
    // One post; then the three, over a kibibyte.
    for (path, compressed) in [(short, false), (format!("/v1/users/{alice_id}/posts"), true)] {
        let read = |encoding: &'static str| {
            app.http.get(app.url(&path)).header("accept-encoding", encoding).send()
        };
        let gzip = read("gzip").await.unwrap();
        let encoding = gzip.headers().get("content-encoding").cloned();
        let body = gzip.bytes().await.unwrap().to_vec();
        let expected = read("identity").await.unwrap().text().await.unwrap();
        assert_eq!(expected.len() >= 1024, compressed, "{path}: {expected}");
        let text = if compressed {
            assert_eq!(encoding.unwrap(), "gzip");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
                .unwrap();
            text
        } else {
            assert!(encoding.is_none(), "{path}: {encoding:?}");
            String::from_utf8(body).unwrap()
        };
        assert_eq!(text, expected);
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_errors() {
    let app = App::start().await;
    // Gzipped once at start-up: the same bytes, of a known length, every time (a
    // response compressed per request is sent in chunks, without one).
    let mut gzipped = Vec::new();
    for _ in 0..2 {
        let a = app
            .http
            .get(app.url("/openapi.json"))
            .header("accept-encoding", "gzip, br;q=0.5")
            .send()
            .await
            .unwrap();
        assert_eq!(a.headers()["content-encoding"], "gzip");
        let length: usize = a.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = a.bytes().await.unwrap().to_vec();
        assert_eq!(body.len(), length);
        gzipped.push(body);
    }
    assert_eq!(gzipped[0], gzipped[1]);
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzipped[0][..]), &mut plain)
        .unwrap();
    let refused = app
        .http
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());
    assert_eq!(refused.text().await.unwrap(), plain);
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    let doc = app.get("/openapi.json", None).await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/accounts",
        "/v1/sessions",
        "/v1/me",
        "/v1/users/{id}",
        "/v1/posts",
        "/v1/posts/{id}",
        "/v1/feed",
        "/v1/users/{id}/follow",
        "/v1/posts/{id}/like",
        "/v1/posts/{id}/comments",
        "/v1/notifications",
        "/v1/notifications/stream",
    ] {
        assert!(paths.contains_key(path), "{path} missing from {:?}", paths.keys());
    }
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('4')),
                "{method} {path} documents no client error"
            );
        }
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn forged_tokens_are_charged_to_the_address_and_passwords_to_the_login_bucket() {
    let app = App::start_with(|c| {
        c.rates.anonymous = Rate::per(2, 60);
        c.rates.login = Rate::per(3, 60);
    })
    .await;
    // Forged tokens: 401 while the address has budget, then 429.
    for _ in 0..2 {
        app.get("/v1/me", Some("forged.token.here"))
            .await
            .error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    app.get("/v1/me", Some("forged.token.here"))
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");

    // A stale token sent while logging in is ignored, as the user service ignores it.
    let app = App::start_with(|c| c.rates.login = Rate::per(3, 60)).await;
    let (_, alice) = app.sign_up("alice").await;
    let login = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some("an.expired.token"),
            Some(serde_json::json!({"username_or_email": "alice", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.body);
    // Guessing the password with a stolen access token costs login budget, not the
    // account's: 2 more guesses, then 429.
    let guess = serde_json::json!({"old_password": "guess", "new_password": "whatever long"});
    for _ in 0..2 {
        let a = app.call(Method::PUT, "/v1/me/password", Some(&alice), Some(guess.clone())).await;
        assert_ne!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    }
    app.call(Method::PUT, "/v1/me/password", Some(&alice), Some(guess))
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn refreshes_and_logins_from_one_address_are_counted_apart() {
    let app = App::start_with(|c| {
        // Three an hour: none comes back while the test runs.
        c.rates.login = Rate::per(3, 3600);
        c.rates.refresh = Rate::per(3, 3600);
    })
    .await;
    let signed_up = app
        .post(
            "/v1/accounts",
            None,
            serde_json::json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(signed_up.status, StatusCode::CREATED, "{}", signed_up.body);
    let refresh_token = signed_up.body["refresh_token"].as_str().unwrap().to_owned();
    // A client behind the address spends two of its three refreshes on tokens that are
    // nobody's...
    let bogus = serde_json::json!({"refresh_token": "0123456789abcdef"});
    for _ in 0..2 {
        let a = app.post("/v1/sessions/refresh", None, bogus.clone()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    }
    // ... and its neighbour still has three logins: one, then two wrong guesses, then
    // refused.
    let login =
        serde_json::json!({"username_or_email": "alice", "password": "correct horse battery"});
    let a = app.post("/v1/sessions", None, login).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let guess = serde_json::json!({"username_or_email": "alice", "password": "a wrong guess"});
    for _ in 0..2 {
        let a = app.post("/v1/sessions", None, guess.clone()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    }
    app.post("/v1/sessions", None, guess)
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    // The logins spent, a refresh still has the refreshes' last one; then it is refused.
    let refresh = serde_json::json!({ "refresh_token": refresh_token });
    let a = app.post("/v1/sessions/refresh", None, refresh).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let refresh = serde_json::json!({ "refresh_token": a.body["refresh_token"] });
    app.post("/v1/sessions/refresh", None, refresh)
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn a_path_that_does_not_decode_is_a_400_in_the_error_shape() {
    let app = App::start().await;
    let a = app.get("/v1/posts/%FF%FE", None).await;
    assert_eq!(a.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["id"]);
}

#[tokio::test]
async fn a_connection_that_does_not_finish_its_request_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = App::start_with(|c| {
        c.timeouts.headers = Duration::from_millis(300);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Half a request, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was still open after 5 s");
    // A whole request on a fresh connection is answered as ever.
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
}
