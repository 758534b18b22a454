//! The service as a whole: tokens on every call, an unreachable database, reflection,
//! the hashing budget, internal RPCs, and start-up refusals.

use super::*;
use social_testkit::{Answer, Refused};

#[tokio::test]
async fn bad_tokens_are_unauthenticated_even_on_open_calls() {
    let app = spawn().await;
    let (judy, token) = app.register("judy").await;
    let mut c = app.client.clone();
    let user_id = ObjectId::parse_str(&judy.id).unwrap();
    let mut forged = token.clone();
    forged.truncate(token.len() - 4);
    forged.push_str("AAAA");
    for bad in [forged, expired_token_for(user_id), "not.a.token".into()] {
        let err =
            c.get_user(authed(GetUserRequest { id: judy.id.clone() }, &bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
    }
    let mut raw = Request::new(GetUserRequest { id: judy.id.clone() });
    raw.metadata_mut().insert("authorization", token.parse().unwrap());
    assert_eq!(c.get_user(raw).await.unwrap_err().code(), Code::Unauthenticated);

    // Login and Register ignore a token: a client still sending its expired one can
    // log in again.
    let stale = expired_token_for(user_id);
    let login = c
        .login(authed(
            LoginRequest {
                username_or_email: "judy".into(),
                password: "correct horse battery".into(),
                device: String::new(),
            },
            &stale,
        ))
        .await
        .answer();
    assert_eq!(login.user.unwrap().id, judy.id);
    assert!(c.register(authed(registration("kim"), &stale)).await.is_ok());
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_fast() {
    // Nothing listens on port 1.
    let mut config = social_user::Config::for_tests(
        "mongodb://127.0.0.1:1/?directConnection=true",
        "x",
        social_events::EventsConfig::for_tests(&unique_name("t")),
    );
    config.common.mongodb_timeout = std::time::Duration::from_millis(300);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(social_user::run(config, listener, shutdown.clone()));
    let channel = social_testkit::channel(addr).await;

    let started = std::time::Instant::now();
    UserServiceClient::new(channel.clone())
        .get_user(GetUserRequest { id: ObjectId::new().to_hex() })
        .await
        .refused(Code::Unavailable);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "social.user.v1.UserService".into(),
        })
        .await
        .answer();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_lists_the_service_and_health() {
    let app = spawn().await;
    let services = social_testkit::reflected_services(app.running.addr).await;
    assert!(services.contains(&"social.user.v1.UserService".to_owned()), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health".to_owned()), "{services:?}");
    assert!(!services.iter().any(|s| s.contains("PostService")), "{services:?}");
}

#[tokio::test]
async fn logins_beyond_the_hashing_budget_are_refused_at_once_with_a_retry_delay() {
    // Room for one hash at a time, and no waiting for a turn.
    let app = spawn_with(|c| {
        c.hash_memory_mib = 19;
        c.hash_wait = std::time::Duration::ZERO;
    })
    .await;
    let logins = (0..6).map(|i| {
        let mut client = app.client.clone();
        async move {
            client
                .login(LoginRequest {
                    username_or_email: format!("nobody{i}"),
                    password: "correct horse battery".into(),
                    device: String::new(),
                })
                .await
        }
    });
    let results = futures::future::join_all(logins).await;
    let codes: Vec<Code> = results.iter().map(|r| r.as_ref().unwrap_err().code()).collect();
    let refused: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::Unavailable)
        .collect();
    assert!(!refused.is_empty(), "{codes:?}");
    assert!(codes.contains(&Code::Unauthenticated), "one was checked: {codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, Code::Unavailable | Code::Unauthenticated)),
        "{codes:?}"
    );
    use tonic_types::StatusExt;
    assert!(refused[0].get_error_details().retry_info().is_some());
}

#[tokio::test]
async fn internal_rpcs_need_the_service_credential() {
    let app = spawn().await;
    app.register("known").await;
    let ask = || BatchGetUsersByUsernameRequest { usernames: vec!["known".into()] };
    let err = app.client.clone().batch_get_users_by_username(ask()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A user's token is not a service credential.
    let err = app
        .client
        .clone()
        .batch_get_users_by_username(authed(ask(), &token_for(ObjectId::new())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut wrong = Request::new(ask());
    wrong.metadata_mut().insert("x-service-token", "guess".parse().unwrap());
    let err = app.client.clone().batch_get_users_by_username(wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A client cannot mark a public RPC internal or unmark an internal one.
    let mut spoofed = Request::new(ask());
    spoofed.metadata_mut().insert("x-social-internal-rpc", "0".parse().unwrap());
    assert_eq!(
        app.client.clone().batch_get_users_by_username(spoofed).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // The services' own credential works.
    let peer = social_testkit::peer(
        "user service",
        &format!("http://{}", app.running.addr),
        std::time::Duration::from_secs(2),
    );
    let found = app.client.clone().batch_get_users_by_username(peer.request(ask())).await.answer();
    assert_eq!(found.users.len(), 1);
}

#[tokio::test]
async fn a_service_without_keys_refuses_to_start_and_names_the_variable() {
    let run = |config: social_user::Config| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        social_user::run(config, listener, shutdown).await.unwrap_err().to_string()
    };
    let config = || {
        let mut c = social_user::Config::for_tests(
            &mongodb_uri(),
            &unique_name("keys"),
            social_events::EventsConfig::for_tests(&unique_name("t")),
        );
        c.common.development_keys = false;
        c
    };
    assert!(run(config()).await.contains("AUTH_PUBLIC_KEY"));
    let mut c = config();
    c.common.auth_public_key_pem = Some(
        include_str!("../../../../crates/kit/dev-keys/DEVELOPMENT-ONLY-ed25519-public.pem").into(),
    );
    assert!(run(c.clone()).await.contains("SERVICE_TOKEN"));
    // With real keys, the development secrets never stand in silently, even with
    // DEVELOPMENT_KEYS=true: each missing one is named.
    let mut development = c.clone();
    development.common.development_keys = true;
    assert!(run(development.clone()).await.contains("SERVICE_TOKEN"));
    development.common.service_token = Some("a secret".into());
    assert!(run(development).await.contains("GATEWAY_TOKEN"));
    c.common.service_token = Some("a secret".into());
    assert!(run(c.clone()).await.contains("GATEWAY_TOKEN"));
    c.common.gateway_token = Some("another secret".into());
    assert!(run(c).await.contains("AUTH_PRIVATE_KEY"));
}

#[test]
fn the_binary_refuses_to_start_on_a_bad_variable_and_names_it() {
    // A malformed address; a limit that would close every network at one failure; a
    // setting whose meaning changed, left over from an older deployment.
    for (var, value) in
        [("USER_ADDR", "nope"), ("LOGIN_ACCOUNT_FAILURES", "0"), ("LOGIN_ACCOUNT_SLOWDOWN", "100")]
    {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_social-user"))
            .env("DEVELOPMENT_KEYS", "true")
            .env(var, value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A binary that accepted the value goes on to start: stopped, and failed below.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() && waited < 200 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            waited += 1;
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{var}=\"{value}\"")), "{stderr}");
    }
}
