//! UserService through its gRPC surface: every validation rule and error row of API.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod guessing;
mod lifetime;
mod sessions;

use bson::oid::ObjectId;
use prost_types::FieldMask;
use social_proto::user::v1::{
    BatchGetUsersByUsernameRequest, BatchGetUsersRequest, ChangePasswordRequest,
    GetUserByUsernameRequest, GetUserRequest, LoginRequest, RegisterRequest, UpdateUserRequest,
    User, user_service_client::UserServiceClient,
};
use social_testkit::{
    Running, authed, expired_token_for, mongodb_uri, start, token_for, unique_name, violated_fields,
};
use tonic::{Code, Request, transport::Channel};

struct App {
    running: Running,
    client: UserServiceClient<Channel>,
    _database: social_testkit::DropDatabase,
}

async fn spawn() -> App {
    spawn_with(|_| {}).await
}

async fn spawn_with(change: impl FnOnce(&mut social_user::Config)) -> App {
    let database = unique_name("user_it");
    let mut config = social_user::Config::for_tests(
        &mongodb_uri(),
        &database,
        social_events::EventsConfig::for_tests(&unique_name("t")),
    );
    change(&mut config);
    let running = start(|listener, shutdown| social_user::run(config, listener, shutdown)).await;
    let client = UserServiceClient::new(running.channel().await);
    App {
        running,
        client,
        _database: social_testkit::DropDatabase(database),
    }
}

fn registration(username: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.into(),
        email: format!("{username}@example.com"),
        password: "correct horse battery".into(),
        full_name: "Test User".into(),
        device: String::new(),
    }
}

impl App {
    async fn register(&self, username: &str) -> (User, String) {
        let r = self
            .client
            .clone()
            .register(registration(username))
            .await
            .unwrap()
            .into_inner();
        (r.user.unwrap(), r.access_token)
    }
}

#[tokio::test]
async fn register_returns_the_user_and_a_working_token() {
    let app = spawn().await;
    let (user, token) = app.register("Alice").await;
    assert_eq!(user.username, "Alice");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.followers_count, 0);
    assert!(user.created_at.is_some());

    // The owner sees the email; anybody else does not.
    let mut c = app.client.clone();
    let own = c
        .get_user(authed(
            GetUserRequest {
                id: user.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.email, "alice@example.com");
    let anon = c
        .get_user(GetUserRequest {
            id: user.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(anon.email, "");
    let other = token_for(ObjectId::new());
    let seen = c
        .get_user(authed(GetUserRequest { id: user.id }, &other))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.email, "");
}

#[tokio::test]
async fn register_names_every_bad_field_and_stores_nothing() {
    let app = spawn().await;
    let mut c = app.client.clone();
    let err = c
        .register(RegisterRequest {
            username: "a!".into(),
            email: "not-an-email".into(),
            password: "short".into(),
            full_name: "x".repeat(51),
            device: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        ["username", "email", "password", "full_name"]
    );

    let err = c
        .register(RegisterRequest {
            username: "good_name".into(),
            email: "a@b".into(),
            password: "p".repeat(129),
            full_name: String::new(),
            device: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["email", "password"]);
    let err = c
        .get_user_by_username(GetUserByUsernameRequest {
            username: "good_name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn usernames_are_unique_case_insensitively_and_the_original_is_untouched() {
    let app = spawn().await;
    let (alice, _) = app.register("alice").await;
    let mut c = app.client.clone();
    let err = c
        .register(RegisterRequest {
            email: "other@example.com".into(),
            ..registration("Alice")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(violated_fields(&err), ["username"]);
    assert!(err.message().contains("username"));

    let err = c
        .register(RegisterRequest {
            email: "ALICE@Example.com".into(),
            ..registration("alice2")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(violated_fields(&err), ["email"]);

    // The stored user is the first one, with its password.
    let login = c
        .login(LoginRequest {
            username_or_email: "ALICE".into(),
            password: "correct horse battery".into(),
            device: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().id, alice.id);
}

// Several worker threads: the racing calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_name_make_one_account() {
    let app = spawn().await;
    let names = ["Bob", "bob", "BOB", "bOb", "boB", "BoB"];
    let attempts = names.iter().enumerate().map(|(i, name)| {
        let mut c = app.client.clone();
        let req = RegisterRequest {
            email: format!("bob{i}@example.com"),
            ..registration(name)
        };
        async move { c.register(req).await }
    });
    // Polled together so that they really race.
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::AlreadyExists);
    }
}

#[tokio::test]
async fn login_fails_the_same_way_for_unknown_users_and_wrong_passwords() {
    let app = spawn().await;
    let (carol, _) = app.register("carol").await;
    let mut c = app.client.clone();
    let by_email = c
        .login(LoginRequest {
            username_or_email: "Carol@Example.com".into(),
            password: "correct horse battery".into(),
            device: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_email.user.as_ref().unwrap().id, carol.id);
    assert!(!by_email.access_token.is_empty());
    assert!(by_email.expires_at.is_some());

    let wrong = c
        .login(LoginRequest {
            username_or_email: "carol".into(),
            password: "wrong password".into(),
            device: String::new(),
        })
        .await
        .unwrap_err();
    let unknown = c
        .login(LoginRequest {
            username_or_email: "nobody".into(),
            password: "wrong password".into(),
            device: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());

    let empty = c
        .login(LoginRequest {
            username_or_email: String::new(),
            password: String::new(),
            device: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&empty), ["username_or_email", "password"]);
}

#[tokio::test]
async fn get_user_validates_and_finds() {
    let app = spawn().await;
    let (dave, _) = app.register("Dave").await;
    let mut c = app.client.clone();
    let err = c
        .get_user(GetUserRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["id"]);
    let err = c
        .get_user(GetUserRequest {
            id: ObjectId::new().to_hex(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let found = c
        .get_user_by_username(GetUserByUsernameRequest {
            username: "DAVE".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.id, dave.id);
    assert_eq!(found.username, "Dave");
    let err = c
        .get_user_by_username(GetUserByUsernameRequest {
            username: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["username"]);
    let err = c
        .get_user_by_username(GetUserByUsernameRequest {
            username: "nobody_here".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn batch_gets_keep_order_and_omit_missing() {
    let app = spawn().await;
    let (erin, _) = app.register("erin").await;
    let (frank, _) = app.register("frank").await;
    let mut c = app.client.clone();
    let users = c
        .batch_get_users(BatchGetUsersRequest {
            ids: vec![
                frank.id.clone(),
                ObjectId::new().to_hex(),
                erin.id.clone(),
                frank.id.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    let ids: Vec<_> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, [frank.id.as_str(), erin.id.as_str()]);
    assert!(users.iter().all(|u| u.email.is_empty()));

    let err = c
        .batch_get_users(BatchGetUsersRequest { ids: vec![] })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids"]);
    let err = c
        .batch_get_users(BatchGetUsersRequest {
            ids: vec![erin.id.clone(), "bad".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids[1]"]);
    let err = c
        .batch_get_users(BatchGetUsersRequest {
            ids: (0..101).map(|_| ObjectId::new().to_hex()).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids"]);

    let by_name = c
        .batch_get_users_by_username(social_testkit::as_service(BatchGetUsersByUsernameRequest {
            usernames: vec!["FRANK".into(), "ghost".into(), "Erin".into()],
        }))
        .await
        .unwrap()
        .into_inner()
        .users;
    let names: Vec<_> = by_name.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["frank", "erin"]);
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test]
async fn update_user_is_self_only_and_validated() {
    let app = spawn().await;
    let (gina, token) = app.register("gina").await;
    let (hank, _) = app.register("hank").await;
    let mut c = app.client.clone();
    let update = |id: &str, bio: &str, url: &str, paths: &[&str]| UpdateUserRequest {
        user: Some(User {
            id: id.into(),
            bio: bio.into(),
            profile_picture_url: url.into(),
            full_name: "New Name".into(),
            ..Default::default()
        }),
        update_mask: mask(paths),
    };

    let err = c
        .update_user(update(&gina.id, "hi", "", &["bio"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .update_user(authed(update(&hank.id, "hi", "", &["bio"]), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .update_user(authed(
            update(
                &gina.id,
                &"b".repeat(161),
                "ftp://x.y/z",
                &["bio", "profile_picture_url", "username"],
            ),
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        ["user.bio", "user.profile_picture_url", "update_mask.paths"]
    );

    // The bad requests changed nothing.
    let unchanged = c
        .get_user(GetUserRequest {
            id: gina.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.bio, "");
    assert_eq!(unchanged.updated_at, gina.updated_at);

    let updated = c
        .update_user(authed(
            update(
                &gina.id,
                "Rust and coffee",
                "https://cdn.example.com/g.png",
                &["bio", "profile_picture_url"],
            ),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.bio, "Rust and coffee");
    assert_eq!(updated.profile_picture_url, "https://cdn.example.com/g.png");
    assert_eq!(
        updated.full_name, "Test User",
        "not in the mask, so not changed"
    );
    assert_eq!(updated.email, "gina@example.com");
    let secs = |u: &User| {
        u.updated_at.unwrap().seconds * 1000 + i64::from(u.updated_at.unwrap().nanos) / 1_000_000
    };
    assert!(secs(&updated) >= secs(&gina));
}

#[tokio::test]
async fn change_password_checks_the_old_one() {
    let app = spawn().await;
    let (_, token) = app.register("ivan").await;
    let mut c = app.client.clone();
    let change = |old: &str, new: &str| ChangePasswordRequest {
        old_password: old.into(),
        new_password: new.into(),
    };
    let err = c
        .change_password(change("x", "new password!"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .change_password(authed(change("wrong password", "new password!"), &token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["old_password"]);
    let err = c
        .change_password(authed(change("correct horse battery", "short"), &token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["new_password"]);

    c.change_password(authed(
        change("correct horse battery", "new password!"),
        &token,
    ))
    .await
    .unwrap();
    let login = |pw: &str| LoginRequest {
        username_or_email: "ivan".into(),
        password: pw.into(),
        device: String::new(),
    };
    assert!(c.login(login("new password!")).await.is_ok());
    assert_eq!(
        c.login(login("correct horse battery"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

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
        let err = c
            .get_user(authed(
                GetUserRequest {
                    id: judy.id.clone(),
                },
                &bad,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
    }
    let mut raw = Request::new(GetUserRequest {
        id: judy.id.clone(),
    });
    raw.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    assert_eq!(
        c.get_user(raw).await.unwrap_err().code(),
        Code::Unauthenticated
    );

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
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().id, judy.id);
    assert!(
        c.register(authed(registration("kim"), &stale))
            .await
            .is_ok()
    );
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
    let err = UserServiceClient::new(channel.clone())
        .get_user(GetUserRequest {
            id: ObjectId::new().to_hex(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "social.user.v1.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
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
    assert!(
        services.contains(&"social.user.v1.UserService".to_owned()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
    assert!(
        !services.iter().any(|s| s.contains("PostService")),
        "{services:?}"
    );
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
    let codes: Vec<Code> = results
        .iter()
        .map(|r| r.as_ref().unwrap_err().code())
        .collect();
    let refused: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::Unavailable)
        .collect();
    assert!(!refused.is_empty(), "{codes:?}");
    assert!(
        codes.contains(&Code::Unauthenticated),
        "one was checked: {codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Unavailable | Code::Unauthenticated)),
        "{codes:?}"
    );
    use tonic_types::StatusExt;
    assert!(refused[0].get_error_details().retry_info().is_some());
}

#[tokio::test]
async fn internal_rpcs_need_the_service_credential() {
    let app = spawn().await;
    app.register("known").await;
    let ask = || BatchGetUsersByUsernameRequest {
        usernames: vec!["known".into()],
    };
    let err = app
        .client
        .clone()
        .batch_get_users_by_username(ask())
        .await
        .unwrap_err();
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
    wrong
        .metadata_mut()
        .insert("x-service-token", "guess".parse().unwrap());
    let err = app
        .client
        .clone()
        .batch_get_users_by_username(wrong)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A client cannot mark a public RPC internal or unmark an internal one.
    let mut spoofed = Request::new(ask());
    spoofed
        .metadata_mut()
        .insert("x-social-internal-rpc", "0".parse().unwrap());
    assert_eq!(
        app.client
            .clone()
            .batch_get_users_by_username(spoofed)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // The services' own credential works.
    let peer = social_testkit::peer(
        "user service",
        &format!("http://{}", app.running.addr),
        std::time::Duration::from_secs(2),
    );
    let found = app
        .client
        .clone()
        .batch_get_users_by_username(peer.request(ask()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.users.len(), 1);
}

#[tokio::test]
async fn a_service_without_keys_refuses_to_start_and_names_the_variable() {
    let run = |config: social_user::Config| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        social_user::run(config, listener, shutdown)
            .await
            .unwrap_err()
            .to_string()
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
    for (var, value) in [
        ("USER_ADDR", "nope"),
        ("LOGIN_ACCOUNT_FAILURES", "0"),
        ("LOGIN_ACCOUNT_SLOWDOWN", "100"),
    ] {
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
