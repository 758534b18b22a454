//! Password guessing: counted before the check, per account and network, so that a
//! burst gets no more than the limit, the attacker's network is locked out and the
//! owner's is not; passwords too easy to guess; revocation that takes effect at once.

use std::time::Duration;

use social_proto::user::v1::{
    ChangePasswordRequest, ExportAccountRequest, LoginRequest, LogoutRequest, RegisterRequest,
    RevokeOtherSessionsRequest,
};
use social_testkit::authed;
use tonic::{Code, Request, Status};

use crate::{App, spawn_with};

const PASSWORD: &str = "correct horse battery";

/// A login as the gateway reports it: the client's address, vouched for by the
/// gateway's credential (or, without it, a claim the service ignores).
fn login_from(who: &str, password: &str, address: &str, vouched: bool) -> Request<LoginRequest> {
    let mut request = Request::new(LoginRequest {
        username_or_email: who.into(),
        password: password.into(),
        device: String::new(),
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        social_kit::serve::CLIENT_ADDRESS_HEADER,
        address.parse().unwrap(),
    );
    if vouched {
        metadata.insert(
            social_kit::serve::GATEWAY_TOKEN_HEADER,
            social_kit::auth::DEV_GATEWAY_TOKEN.parse().unwrap(),
        );
    }
    request
}

impl App {
    async fn attempt(&self, request: Request<LoginRequest>) -> Result<(), Status> {
        self.client.clone().login(request).await.map(drop)
    }
}

/// Three free failures per network, then a second's block, doubling; past eight
/// failures of one account, only its known networks.
fn app_throttle() -> social_user::LoginThrottle {
    social_user::LoginThrottle {
        free: 3,
        window: Duration::from_secs(86_400),
        first_block: Duration::from_secs(1),
        max_block: Duration::from_secs(60),
        account_failures: 8,
    }
}

async fn strict() -> App {
    spawn_with(|c| c.login_throttle = app_throttle()).await
}

fn retry_after(status: &Status) -> Duration {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_default()
}

// Several worker threads: the burst's calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_guesses_at_a_blocks_end_gets_one_check_and_the_block_only_grows() {
    let app = strict().await;
    app.register("alice").await;
    // Three replicas on one database (one replica hashes one password at a time here:
    // the burst is spread over all three, which check at once).
    let mut replicas = vec![app.client.clone()];
    let mut running = Vec::new();
    for _ in 0..2 {
        let mut config = social_user::Config::for_tests(
            &social_testkit::mongodb_uri(),
            &app._database.0,
            social_events::EventsConfig::for_tests(&social_testkit::unique_name("t")),
        );
        config.login_throttle = app_throttle();
        let replica = social_testkit::start(|l, s| social_user::run(config, l, s)).await;
        replicas.push(
            social_proto::user::v1::user_service_client::UserServiceClient::new(
                replica.channel().await,
            ),
        );
        running.push(replica);
    }
    let from = |password: &str| login_from("alice", password, "203.0.113.66", true);
    for _ in 0..3 {
        let err = app.attempt(from("wrong guess")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = app.attempt(from(PASSWORD)).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "blocked, even the password"
    );
    tokio::time::sleep(retry_after(&err) + Duration::from_millis(100)).await;
    // The block is over: fifty guesses at once, on three replicas, get one check.
    let burst = (0..50).map(|i| {
        let mut client = replicas[i % 3].clone();
        let request = from("wrong guess");
        async move { client.login(request).await.map(drop) }
    });
    let results = futures::future::join_all(burst).await;
    let checked = results
        .iter()
        .filter(|r| r.as_ref().unwrap_err().code() == Code::Unauthenticated)
        .count();
    let refused = results
        .iter()
        .filter(|r| r.as_ref().unwrap_err().code() == Code::ResourceExhausted)
        .count();
    assert_eq!((checked, refused), (1, 49), "checked, refused");
    // And the next block is longer than the first.
    let err = app.attempt(from(PASSWORD)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(retry_after(&err) > Duration::from_millis(1100), "{err:?}");
}

#[tokio::test]
async fn a_blocked_username_does_not_tell_which_email_is_its_accounts() {
    let app = strict().await;
    app.register("alice").await;
    app.register("bob").await;
    let on = |who: &str| login_from(who, "wrong guess", "203.0.113.66", true);
    for _ in 0..3 {
        app.attempt(on("ALICE")).await.unwrap_err();
    }
    let err = app.attempt(on("alice")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "the username, blocked");
    // Her email and another's answer alike: a wrong password, not a block.
    for who in ["alice@example.com", "bob@example.com"] {
        let err = app.attempt(on(who)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{who}");
    }
}

#[tokio::test]
async fn guesses_spread_over_many_networks_stop_at_the_accounts_limit_but_not_its_owner() {
    let app = strict().await;
    app.register("alice").await;
    // The owner signs in from home once: a network the account knows.
    app.attempt(login_from("alice", PASSWORD, "198.51.100.7", true))
        .await
        .unwrap();
    // The attacker moves to a new /64 of their /48 before each block: three free
    // failures each, until the account has eight (its username and email alike).
    let mut checked = 0;
    for n in 0..6 {
        for who in ["alice", "alice@example.com"] {
            let from = format!("2001:db8:77:{n:x}::1");
            let outcome = app
                .attempt(login_from(who, "wrong guess", &from, true))
                .await;
            if outcome.is_err_and(|e| e.code() == Code::Unauthenticated) {
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8, "checks before the account's limit");
    // A fresh network is refused now, even with the password, until the failures are
    // forgotten...
    let err = app
        .attempt(login_from("alice", PASSWORD, "2001:db8:77:ff::1", true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(retry_after(&err) > Duration::from_secs(80_000), "{err:?}");
    // ... and the owner's own network is not.
    app.attempt(login_from(
        "alice@example.com",
        PASSWORD,
        "198.51.100.7",
        true,
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn an_attacker_failing_from_one_network_does_not_lock_the_owner_out_of_another() {
    let app = strict().await;
    app.register("alice").await;
    for _ in 0..10 {
        let _ = app
            .attempt(login_from("alice", "wrong guess", "203.0.113.66", true))
            .await;
    }
    let err = app
        .attempt(login_from("alice", PASSWORD, "203.0.113.66", true))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "the attacker's network"
    );
    // The owner, from home: in at once.
    app.attempt(login_from("alice", PASSWORD, "198.51.100.7", true))
        .await
        .unwrap();
    // The attacker cannot move to another network by saying so: without the gateway's
    // credential the claim is ignored, and the connection's address is counted.
    for _ in 0..3 {
        let _ = app
            .attempt(login_from("alice", "wrong guess", "192.0.2.1", false))
            .await;
    }
    let err = app
        .attempt(login_from("alice", "wrong guess", "192.0.2.2", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "counted as the peer");
}

#[tokio::test]
async fn guesses_of_the_current_password_through_change_password_are_throttled_too() {
    let app = strict().await;
    let (_, token) = app.register("alice").await;
    let change = |old: &str| {
        let mut client = app.client.clone();
        let request = authed(
            ChangePasswordRequest {
                old_password: old.into(),
                new_password: "a brand new passphrase".into(),
            },
            &token,
        );
        async move { client.change_password(request).await }
    };
    for _ in 0..3 {
        let err = change("wrong guess").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let err = change(PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn passwords_too_easy_to_guess_are_refused_naming_the_field() {
    let app = strict().await;
    let err = app
        .client
        .clone()
        .register(RegisterRequest {
            username: "bob".into(),
            email: "bob@example.com".into(),
            password: "password123".into(),
            full_name: String::new(),
            device: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(social_testkit::violated_fields(&err), ["password"]);
    let (_, token) = app.register("alice").await;
    for weak in ["qwertyuiop", "alice@example.com1"] {
        let err = app
            .client
            .clone()
            .change_password(authed(
                ChangePasswordRequest {
                    old_password: PASSWORD.into(),
                    new_password: weak.into(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            social_testkit::violated_fields(&err),
            ["new_password"],
            "{weak}"
        );
    }
}

#[tokio::test]
async fn an_identifier_longer_than_any_account_has_is_refused_before_any_look_up() {
    let app = strict().await;
    let err = app
        .attempt(login_from(&"a".repeat(255), PASSWORD, "203.0.113.66", true))
        .await
        .unwrap_err();
    assert_eq!(social_testkit::violated_fields(&err), ["username_or_email"]);
}

#[tokio::test]
async fn a_session_ended_a_moment_ago_cannot_act_for_the_account() {
    let app = strict().await;
    let (user, _) = app.register("alice").await;
    let login = app
        .client
        .clone()
        .login(LoginRequest {
            username_or_email: "alice".into(),
            password: PASSWORD.into(),
            device: "stolen laptop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    app.client
        .clone()
        .logout(authed(LogoutRequest {}, &login.access_token))
        .await
        .unwrap();
    // The access token is unexpired, but its session ended: it logs nobody out and
    // exports nothing.
    let err = app
        .client
        .clone()
        .revoke_other_sessions(authed(RevokeOtherSessionsRequest {}, &login.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app
        .client
        .clone()
        .export_account(authed(ExportAccountRequest {}, &login.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // And the profile it reads is anybody's view: no email.
    let seen = app
        .client
        .clone()
        .get_user(authed(
            social_proto::user::v1::GetUserRequest { id: user.id },
            &login.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.email, "");
}
