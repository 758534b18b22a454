//! `Idempotency-Key` on the creating routes: a retry gets the first answer and stores
//! nothing more, another request under the key is refused, requests racing under one
//! key store one thing, and the services store once even when the gateway forgot.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Answer, App};

impl App {
    async fn keyed(&self, path: &str, token: Option<&str>, key: &str, body: Value) -> Answer {
        self.keyed_at(&self.base, path, token, key, body).await
    }

    /// POSTs `body` to `path` at the gateway `base` with `key`.
    async fn keyed_at(
        &self,
        base: &str,
        path: &str,
        token: Option<&str>,
        key: &str,
        body: Value,
    ) -> Answer {
        let mut request =
            self.http.post(format!("{base}{path}")).header("idempotency-key", key).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap();
        Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
    }

    async fn posts_of(&self, user: &str, token: &str) -> Vec<Value> {
        let page = self.get(&format!("/v1/users/{user}/posts"), Some(token)).await;
        page.body["items"].as_array().cloned().unwrap_or_default()
    }
}

#[tokio::test]
async fn a_post_retried_with_its_key_is_stored_once_and_answered_the_same() {
    let app = App::start().await;
    let (me, token) = app.sign_up("ann").await;
    let (_, other) = app.sign_up("ben").await;
    let body = json!({ "content": "once" });
    let first = app.keyed("/v1/posts", Some(&token), "k-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = app.keyed("/v1/posts", Some(&token), "k-1", body.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.posts_of(&me, &token).await.len(), 1, "stored once");

    // Another request under the key: refused, naming the header.
    let other_body =
        app.keyed("/v1/posts", Some(&token), "k-1", json!({ "content": "twice" })).await;
    let fields = other_body.error(StatusCode::UNPROCESSABLE_ENTITY, "FAILED_PRECONDITION");
    assert_eq!(fields, ["Idempotency-Key"]);
    // A key that is no key.
    let long = "k".repeat(256);
    for bad in [long.as_str(), "with space"] {
        let a = app.keyed("/v1/posts", Some(&token), bad, body.clone()).await;
        assert_eq!(a.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), ["Idempotency-Key"]);
    }
    // Keys are each caller's own.
    let bens = app.keyed("/v1/posts", Some(&other), "k-1", body.clone()).await;
    assert_eq!(bens.status, StatusCode::CREATED);
    assert_ne!(bens.body["id"], first.body["id"]);
    // A refusal before it ran is not remembered: fixed, the request runs.
    let empty = app.keyed("/v1/posts", Some(&token), "k-2", json!({ "content": "" })).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let fixed = app.keyed("/v1/posts", Some(&token), "k-2", json!({ "content": "fixed" })).await;
    assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
}

#[tokio::test]
async fn requests_racing_under_one_key_store_one_post() {
    let app = App::start().await;
    let (me, token) = app.sign_up("ann").await;
    let body = json!({ "content": "raced" });
    let answers = futures::future::join_all(
        (0..8).map(|_| app.keyed("/v1/posts", Some(&token), "race", body.clone())),
    )
    .await;
    let created: Vec<&Answer> =
        answers.iter().filter(|a| a.status == StatusCode::CREATED).collect();
    assert!(!created.is_empty());
    for a in &answers {
        if a.status != StatusCode::CREATED {
            a.error(StatusCode::CONFLICT, "ABORTED");
            assert_eq!(a.header("retry-after"), Some("1"));
        }
    }
    assert!(created.iter().all(|a| a.body["id"] == created[0].body["id"]));
    let ran = created.iter().filter(|a| a.header("idempotent-replayed").is_none()).count();
    assert_eq!(ran, 1, "more than one request ran");
    assert_eq!(app.posts_of(&me, &token).await.len(), 1, "stored once");
}

#[tokio::test]
async fn with_the_gateways_memory_lost_a_retry_still_stores_once() {
    let app = App::start().await;
    let (me, token) = app.sign_up("ann").await;
    // A gateway whose Redis remembers nothing of the first one's requests (as after a
    // loss of Redis): the services hold the line.
    let forgetful = app
        .stack
        .gateway(|c| c.redis_key_prefix = format!("other-{}:", bson::oid::ObjectId::new()))
        .await;
    let forgetful = format!("http://{}", forgetful.addr);
    let body = json!({ "content": "once, for sure" });
    let first = app.keyed("/v1/posts", Some(&token), "k", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let retry = app.keyed_at(&forgetful, "/v1/posts", Some(&token), "k", body.clone()).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), None, "it ran again");
    assert_eq!(retry.body["id"], first.body["id"]);
    assert_eq!(app.posts_of(&me, &token).await.len(), 1, "stored once");

    let comments = format!("/v1/posts/{}/comments", first.body["id"].as_str().unwrap());
    let comment = json!({ "content": "me too" });
    let first = app.keyed(&comments, Some(&token), "c", comment.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let retry = app.keyed_at(&forgetful, &comments, Some(&token), "c", comment).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["id"], first.body["id"]);
    let listed = app.get(&comments, Some(&token)).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1), "{}", listed.body);

    // A sign-up too: the retry finds the account its first try made, and answers it
    // with a new session, not "taken"; another request (another password) is taken.
    let body = json!({
        "username": "dora", "email": "dora@example.com", "password": "correct horse battery",
    });
    let first = app.keyed("/v1/accounts", None, "s", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let retry = app.keyed_at(&forgetful, "/v1/accounts", None, "s", body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["user"]["id"], first.body["user"]["id"]);
    assert_ne!(retry.body["session_id"], first.body["session_id"]);
    let other = json!({
        "username": "dora", "email": "dora@example.com", "password": "another horse battery",
    });
    let taken = app.keyed_at(&forgetful, "/v1/accounts", None, "s2", other).await;
    taken.error(StatusCode::CONFLICT, "ALREADY_EXISTS");
}

/// The one key of Redis that matches `pattern`, and its value.
async fn only_record(
    redis: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> (String, String) {
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(redis).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let held: String = redis::cmd("GET").arg(&keys[0]).query_async(redis).await.unwrap();
    (keys[0].clone(), held)
}

#[tokio::test]
async fn a_sign_up_retried_with_its_key_gets_its_tokens_which_redis_holds_sealed() {
    let prefix = format!("sealed-{}:", bson::oid::ObjectId::new());
    let app = App::start_with(|c| c.redis_key_prefix = prefix.clone()).await;
    let body = json!({
        "username": "cleo", "email": "cleo@example.com", "password": "correct horse battery",
    });
    let first = app.keyed("/v1/accounts", None, "signup-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = app.keyed("/v1/accounts", None, "signup-1", body).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body["access_token"], first.body["access_token"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // What Redis holds names neither key nor account, and reveals no token.
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut redis =
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (key, held) = only_record(&mut redis, &format!("{prefix}*")).await;
    for secret in [
        first.body["access_token"].as_str().unwrap(),
        first.body["refresh_token"].as_str().unwrap(),
        "correct horse battery",
        "signup-1",
        "cleo",
        first.body["user"]["id"].as_str().unwrap(),
    ] {
        assert!(!held.contains(secret) && !key.contains(secret), "{secret} in {held}");
    }

    // Nor does a stream ticket's record reveal the token it stands for.
    let token = first.body["access_token"].as_str().unwrap();
    let ticket = app
        .call(reqwest::Method::POST, "/v1/notifications/stream-tickets", Some(token), None)
        .await;
    assert_eq!(ticket.status, StatusCode::CREATED, "{}", ticket.body);
    let (_, held) = only_record(&mut redis, &format!("{prefix}ticket:*")).await;
    assert!(!held.contains(token), "the ticket's record holds the token");
}

/// Anonymous callers share one space of keys, for sign-up and login; any other creating
/// route answers 401 without a token, whatever key came with it.
#[tokio::test]
async fn a_post_without_a_token_is_401_whatever_key_anonymous_callers_used_before() {
    let app = App::start().await;
    let body = json!({
        "username": "finn", "email": "finn@example.com", "password": "correct horse battery",
    });
    let signed_up = app.keyed("/v1/accounts", None, "shared-1", body).await;
    assert_eq!(signed_up.status, StatusCode::CREATED, "{}", signed_up.body);
    let post = json!({ "content": "no token" });
    let anonymous = app.keyed("/v1/posts", None, "shared-1", post).await;
    anonymous.error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}

/// A client that leaves before its answer (a timeout, a dropped connection) does not
/// leave its key held: the request runs to its end, and the retry gets its answer.
#[tokio::test]
async fn a_request_whose_client_left_runs_to_its_end_and_its_retry_gets_the_answer() {
    let app = App::start().await;
    let body = json!({
        "username": "eve", "email": "eve@example.com", "password": "correct horse battery",
    });
    // The registration is held 0.8 s before its session; the client waits 0.3 s. (Held
    // longer, hashing its password on a loaded machine could take the call past the
    // gateway's 2 s deadline: a 504 frees the key, and the retry then runs anew.)
    fail::cfg("user::before_session", "return(800)").unwrap();
    let impatient =
        reqwest::Client::builder().timeout(std::time::Duration::from_millis(300)).build().unwrap();
    let gone = impatient
        .post(app.url("/v1/accounts"))
        .header("idempotency-key", "leave")
        .json(&body)
        .send()
        .await;
    assert!(gone.is_err(), "the client was meant to give up");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    fail::remove("user::before_session");
    assert_eq!(social_kit::faults::fired("user::before_session"), 1);
    // Retried as a 409 says (a loaded machine may still be running it).
    let mut retry = app.keyed("/v1/accounts", None, "leave", body.clone()).await;
    for _ in 0..150 {
        if retry.status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        retry = app.keyed("/v1/accounts", None, "leave", body.clone()).await;
    }
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}
