//! Password guessing: counted before the check, per account and network, so that a
//! burst gets no more than the limit, the attacker's network is locked out and the
//! owner's is not; passwords too easy to guess; revocation that takes effect at once.

use std::time::Duration;

use social_proto::user::v1::{
    ChangePasswordRequest, ExportAccountRequest, LoginRequest, LogoutRequest, RegisterRequest,
    RevokeOtherSessionsRequest,
};
use social_testkit::{Answer, Refused, authed};
use tonic::{Code, Request, Status};

use crate::{App, spawn_with};

use social_testkit::PASSWORD;

/// A login as the gateway reports it: the client's address, vouched for by the
/// gateway's credential (or, without it, a claim the service ignores).
fn login_from(who: &str, password: &str, address: &str, vouched: bool) -> Request<LoginRequest> {
    let request = Request::new(LoginRequest {
        username_or_email: who.into(),
        password: password.into(),
        device: String::new(),
    });
    from_address(request, address, vouched)
}

/// `request` from `address`, as the gateway reports it (`vouched`) or claimed.
fn from_address<T>(mut request: Request<T>, address: &str, vouched: bool) -> Request<T> {
    let metadata = request.metadata_mut();
    metadata.insert(social_kit::serve::CLIENT_ADDRESS_HEADER, address.parse().unwrap());
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
    status.get_error_details().retry_info().and_then(|r| r.retry_delay).unwrap_or_default()
}

// Several worker threads: the burst's calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_guesses_at_a_blocks_end_gets_one_check_and_the_block_only_grows() {
    // Each login holds its replica's one hashing slot while it asks the throttle: on a
    // loaded machine, 17 in a row can outwait the default half second and be refused
    // as overloaded (UNAVAILABLE), which this test is not about.
    let patient = Duration::from_secs(30);
    let app = spawn_with(|c| {
        c.login_throttle = app_throttle();
        c.hash_wait = patient;
    })
    .await;
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
        config.hash_wait = patient;
        let replica = social_testkit::start(|l, s| social_user::run(config, l, s)).await;
        replicas.push(social_proto::user::v1::user_service_client::UserServiceClient::new(
            replica.channel().await,
        ));
        running.push(replica);
    }
    let from = |password: &str| login_from("alice", password, "203.0.113.66", true);
    for _ in 0..3 {
        app.attempt(from("wrong guess")).await.refused(Code::Unauthenticated);
    }
    let err = app.attempt(from(PASSWORD)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "blocked, even the password");
    tokio::time::sleep(retry_after(&err) + Duration::from_millis(100)).await;
    // The block is over: fifty guesses at once, on three replicas, get one check.
    let burst = (0..50).map(|i| {
        let mut client = replicas[i % 3].clone();
        let request = from("wrong guess");
        async move { client.login(request).await.map(drop) }
    });
    let results = futures::future::join_all(burst).await;
    let checked =
        results.iter().filter(|r| r.as_ref().unwrap_err().code() == Code::Unauthenticated).count();
    let refused = results
        .iter()
        .filter(|r| r.as_ref().unwrap_err().code() == Code::ResourceExhausted)
        .count();
    assert_eq!((checked, refused), (1, 49), "checked, refused");
    // And the next block is longer than the first: two seconds from that check (as
    // stored: the time left depends on how long the burst took).
    app.attempt(from(PASSWORD)).await.refused(Code::ResourceExhausted);
    let stored = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&app._database.0)
        .collection::<bson::Document>("login_attempts")
        .find_one(bson::doc! { "_id": "pair:203.0.113.66|login:alice" })
        .await
        .unwrap()
        .unwrap();
    let block =
        stored.get_i64("blocked_until_ms").unwrap() - stored.get_i64("last_failure_ms").unwrap();
    assert_eq!(block, 2_000, "{stored:?}");
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
async fn guesses_spread_over_many_networks_are_slowed_as_one_but_not_its_owners() {
    let app = strict().await;
    // The owner registered from home, and her phone stays signed in by refreshing its
    // session: networks the account knows.
    let registered = app
        .client
        .clone()
        .register(from_address(Request::new(crate::registration("alice")), "198.51.100.7", true))
        .await
        .answer();
    let phone = "198.51.100.99";
    app.client
        .clone()
        .refresh_session(from_address(
            Request::new(social_proto::user::v1::RefreshSessionRequest {
                refresh_token: registered.refresh_token,
            }),
            phone,
            true,
        ))
        .await
        .unwrap();
    // The attacker moves to a new /64 of their /48 for each guess, until the username
    // has eight failures...
    let fresh = |n: u32| format!("2001:db8:77:{n:x}::1");
    for n in 0..8 {
        let err =
            app.attempt(login_from("alice", "wrong guess", &fresh(n), true)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "guess {n}");
    }
    // ... past which every network the account does not know counts as one: three free
    // failures, then a block, whichever new network the next guess comes from.
    for n in 8..11 {
        let err =
            app.attempt(login_from("alice", "wrong guess", &fresh(n), true)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "guess {n}");
    }
    let blocked = app.attempt(login_from("alice", PASSWORD, &fresh(11), true)).await.unwrap_err();
    assert_eq!(blocked.code(), Code::ResourceExhausted, "{blocked:?}");
    // Her email has counts of its own: it answers as any other email would (a wrong
    // password), not "blocked", which would tell whose email it is.
    for n in 20..24 {
        let err = app
            .attempt(login_from("alice@example.com", "wrong guess", &fresh(n), true))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // The owner's own networks are not held up...
    for home in ["198.51.100.7", phone] {
        app.attempt(login_from("alice", PASSWORD, home, true)).await.unwrap();
    }
    // ... and a new one is delayed, not locked: after the block, the password works.
    tokio::time::sleep(retry_after(&blocked) + Duration::from_millis(100)).await;
    app.attempt(login_from("alice", PASSWORD, &fresh(12), true)).await.unwrap();
}

#[tokio::test]
async fn an_attacker_failing_from_one_network_does_not_lock_the_owner_out_of_another() {
    let app = strict().await;
    app.register("alice").await;
    for _ in 0..10 {
        let _ = app.attempt(login_from("alice", "wrong guess", "203.0.113.66", true)).await;
    }
    let err = app.attempt(login_from("alice", PASSWORD, "203.0.113.66", true)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "the attacker's network");
    // The owner, from home: in at once.
    app.attempt(login_from("alice", PASSWORD, "198.51.100.7", true)).await.unwrap();
    // The attacker cannot move to another network by saying so: without the gateway's
    // credential the claim is ignored, and the connection's address is counted.
    for _ in 0..3 {
        let _ = app.attempt(login_from("alice", "wrong guess", "192.0.2.1", false)).await;
    }
    let err =
        app.attempt(login_from("alice", "wrong guess", "192.0.2.2", false)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "counted as the peer");
}

#[tokio::test]
async fn an_identifier_typed_to_look_like_another_count_is_counted_apart() {
    // Blocks long enough that none ends while the test runs on a loaded machine.
    let app = spawn_with(|c| {
        c.login_throttle = social_user::LoginThrottle {
            first_block: Duration::from_secs(30),
            max_block: Duration::from_secs(120),
            ..app_throttle()
        }
    })
    .await;
    let (alice, _) = app.register("alice").await;
    // A stranger types, as the username, what the counts of alice from her home network
    // were once stored under ("login:" and what was typed, then "|" and the network),
    // and the other keys of her counts: more failures than the free ones, from a
    // network of the stranger's.
    let crafted = [
        "alice|198.51.100.7".to_owned(),
        "198.51.100.7|login:alice".to_owned(),
        "pair:198.51.100.7|login:alice".to_owned(),
        format!("known:account:{}|203.0.113.66", alice.id),
    ];
    for who in &crafted {
        for _ in 0..5 {
            let _ = app.attempt(login_from(who, "wrong guess", "203.0.113.66", true)).await;
        }
    }
    // Each counted only what was typed: alice, from home, is in at once...
    app.attempt(login_from("alice", PASSWORD, "198.51.100.7", true)).await.unwrap();
    // ... and the stranger's network did not become one she signed in from: past her
    // account's eight failures, it shares the count of every network she does not know.
    for n in 0..8 {
        let _ = app
            .attempt(login_from("alice", "wrong guess", &format!("2001:db8:77:{n:x}::1"), true))
            .await;
    }
    for _ in 0..3 {
        let _ = app.attempt(login_from("alice", "wrong guess", "2001:db8:78::1", true)).await;
    }
    let err = app.attempt(login_from("alice", PASSWORD, "203.0.113.66", true)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
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
        change("wrong guess").await.refused(Code::InvalidArgument);
    }
    let err = change(PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

/// A registration retried with its idempotency key checks the password of the account
/// it made: counted with the logins by its username, so a stolen key is no way around
/// their limits.
#[tokio::test]
async fn guesses_through_a_registration_retried_with_its_key_are_throttled_too() {
    let app = strict().await;
    let keyed = |password: &str| {
        let request = RegisterRequest { password: password.into(), ..crate::registration("kim") };
        let mut request = Request::new(request);
        request.metadata_mut().insert("idempotency-key", "k-1".parse().unwrap());
        let mut client = app.client.clone();
        async move { client.register(request).await }
    };
    keyed("correct horse battery").await.answer();
    for _ in 0..3 {
        keyed("another horse battery").await.refused(Code::AlreadyExists);
    }
    let err = keyed("correct horse battery").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The logins by that username are held up alike: one count.
    let err = app.attempt(login_from("kim", "correct horse battery", "10.0.0.1", false)).await;
    assert_eq!(err.unwrap_err().code(), Code::ResourceExhausted);
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
                ChangePasswordRequest { old_password: PASSWORD.into(), new_password: weak.into() },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(social_testkit::violated_fields(&err), ["new_password"], "{weak}");
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
        .answer();
    app.client.clone().logout(authed(LogoutRequest {}, &login.access_token)).await.unwrap();
    // The access token is unexpired, but its session ended: it logs nobody out and
    // exports nothing.
    app.client
        .clone()
        .revoke_other_sessions(authed(RevokeOtherSessionsRequest {}, &login.access_token))
        .await
        .refused(Code::Unauthenticated);
    app.client
        .clone()
        .export_account(authed(ExportAccountRequest {}, &login.access_token))
        .await
        .refused(Code::Unauthenticated);
    // And the profile it reads is anybody's view: no email.
    let seen = app
        .client
        .clone()
        .get_user(authed(
            social_proto::user::v1::GetUserRequest { id: user.id },
            &login.access_token,
        ))
        .await
        .answer();
    assert_eq!(seen.email, "");
}

#[tokio::test]
async fn an_identifiers_failures_forgotten_after_the_window_count_from_one_again() {
    // Failures are forgotten three seconds after the last one; past three of one
    // identifier, the networks its account does not know count as one.
    let app = spawn_with(|c| {
        c.login_throttle = social_user::LoginThrottle {
            free: 3,
            window: Duration::from_secs(3),
            first_block: Duration::from_secs(1),
            max_block: Duration::from_secs(2),
            account_failures: 3,
        }
    })
    .await;
    app.register("alice").await;
    let guess = |n: u32| {
        let from = format!("2001:db8:78:{n:x}::1");
        app.attempt(login_from("alice", "wrong guess", &from, true))
    };
    for n in 0..3 {
        assert_eq!(guess(n).await.unwrap_err().code(), Code::Unauthenticated);
    }
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    // Forgotten: three guesses from new networks are each that network's first failure
    // and the identifier's first three; the next two, counted as one network, are its
    // first two failures (were the old three still counted, the fifth would be blocked).
    let codes: Vec<Code> = futures::future::join_all(
        (10..15).map(|n| async move { guess(n).await.unwrap_err().code() }),
    )
    .await;
    assert_eq!(codes, [Code::Unauthenticated; 5]);
}
