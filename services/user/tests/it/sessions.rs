//! Sessions: refresh token rotation with reuse detection, expiry, logout and revocation,
//! and login throttling shared by every replica.

use std::time::Duration;

use bson::oid::ObjectId;
use social_proto::user::v1::{
    ChangePasswordRequest, GetUserRequest, ListSessionsRequest, LoginRequest, LogoutRequest,
    RefreshSessionRequest, RefreshSessionResponse, RevokeOtherSessionsRequest,
    RevokeSessionRequest, Session, user_service_client::UserServiceClient,
};
use social_testkit::{Answer, Refused, authed, mongodb_uri, start, token_for};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::{App, spawn, spawn_with};

use social_testkit::PASSWORD;

/// A session of one login: its tokens.
struct Login {
    access: String,
    refresh: String,
    id: String,
}

impl App {
    async fn login(&self, who: &str, device: &str) -> Result<Login, Status> {
        self.login_with(who, PASSWORD, device).await
    }

    async fn login_with(&self, who: &str, password: &str, device: &str) -> Result<Login, Status> {
        login_on(&mut self.client.clone(), who, password, device).await
    }

    async fn refresh(&self, token: &str) -> Result<RefreshSessionResponse, Status> {
        self.client
            .clone()
            .refresh_session(RefreshSessionRequest { refresh_token: token.into() })
            .await
            .map(|r| r.into_inner())
    }

    async fn sessions(&self, access: &str) -> Vec<Session> {
        self.client
            .clone()
            .list_sessions(authed(ListSessionsRequest::default(), access))
            .await
            .answer()
            .sessions
    }
}

async fn login_on(
    client: &mut UserServiceClient<Channel>,
    who: &str,
    password: &str,
    device: &str,
) -> Result<Login, Status> {
    let r = client
        .login(LoginRequest {
            username_or_email: who.into(),
            password: password.into(),
            device: device.into(),
        })
        .await?
        .into_inner();
    Ok(Login { access: r.access_token, refresh: r.refresh_token, id: r.session_id })
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_a_reused_one_ends_the_session() {
    // No grace: the old token again at once is a reuse.
    let app = spawn_with(|c| c.refresh_grace = Duration::ZERO).await;
    let (user, _) = app.register("alice").await;
    let first = app.login("alice", "phone").await.unwrap();
    assert_eq!(first.refresh.len(), 43, "256 bits, URL-safe base64");

    let second = app.refresh(&first.refresh).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh);
    assert_eq!(second.session_id, first.id);
    // The new access token works and belongs to the same session.
    let me = app
        .client
        .clone()
        .get_user(authed(GetUserRequest { id: user.id.clone() }, &second.access_token))
        .await
        .answer();
    assert_eq!(me.email, "alice@example.com");
    let listed = app.sessions(&second.access_token).await;
    assert!(listed.iter().any(|s| s.id == first.id && s.current));

    // The old token again: refused, and the whole session ends with it.
    app.refresh(&first.refresh).await.refused(Code::Unauthenticated);
    let err = app.refresh(&second.refresh_token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the newer token died too");
    assert!(app.refresh("not a token").await.is_err());
    assert_eq!(app.refresh("").await.unwrap_err().code(), Code::InvalidArgument);
}

// Several worker threads: the racing calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_racing_with_one_token_get_one_successor_and_a_reuse_after_the_grace_ends_the_session()
 {
    let app = spawn_with(|c| c.refresh_grace = Duration::from_secs(1)).await;
    app.register("racer").await;
    let login = app.login("racer", "phone").await.unwrap();
    // Two tabs (or eight) refresh at once, or a client retries after a lost answer:
    // every one gets the same successor, and the session goes on.
    let tries = (0..8).map(|_| app.refresh(&login.refresh));
    let results = futures::future::join_all(tries).await;
    let successors: std::collections::HashSet<String> =
        results.iter().map(|r| r.as_ref().unwrap().refresh_token.clone()).collect();
    assert_eq!(successors.len(), 1, "{results:?}");
    let successor = successors.into_iter().next().unwrap();
    assert_ne!(successor, login.refresh);
    // The old token past the grace is a reuse: the session ends, newer token and all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.refresh(&login.refresh).await.refused(Code::Unauthenticated);
    let err = app.refresh(&successor).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the newer token died too");
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_longest() {
    let app = spawn_with(|c| {
        c.sessions.idle = Duration::from_millis(1500);
        c.sessions.max = Duration::from_millis(3000);
    })
    .await;
    app.register("sleepy").await;
    // Idle too long.
    let idle = app.login("sleepy", "a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(app.refresh(&idle.refresh).await.unwrap_err().code(), Code::Unauthenticated);
    // Refreshed in time, but over its longest life.
    let busy = app.login("sleepy", "b").await.unwrap();
    let mut token = busy.refresh;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        token = app.refresh(&token).await.unwrap().refresh_token;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.refresh(&token).await.unwrap_err().code(), Code::Unauthenticated);
    let fresh = app.login("sleepy", "c").await.unwrap();
    let listed = app.sessions(&fresh.access).await;
    assert_eq!(listed.len(), 1, "ended sessions are not listed: {listed:?}");
}

#[tokio::test]
async fn logout_lists_and_revocations_touch_only_the_callers_sessions() {
    let app = spawn().await;
    let (_, registered) = app.register("owner").await;
    let (laptop, phone) =
        (app.login("owner", "laptop").await.unwrap(), app.login("owner", "phone").await.unwrap());
    let listed = app.sessions(&laptop.access).await;
    assert_eq!(listed.len(), 3, "register, laptop and phone");
    let current: Vec<_> = listed.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].device, "laptop");
    // Nothing of a token in what is listed.
    let shown = format!("{listed:?}");
    for secret in [&laptop.refresh, &phone.refresh] {
        assert!(!shown.contains(secret.as_str()));
    }

    // Another user cannot end them.
    app.register("intruder").await;
    let intruder = app.login("intruder", "x").await.unwrap();
    let mut client = app.client.clone();
    client
        .revoke_session(authed(
            RevokeSessionRequest { session_id: phone.id.clone() },
            &intruder.access,
        ))
        .await
        .refused(Code::NotFound);
    assert!(app.refresh(&phone.refresh).await.is_ok_and(|r| {
        // Keep the rotated token for the next step.
        !r.refresh_token.is_empty()
    }));

    // The owner ends the phone's session; then logs the laptop out.
    client
        .revoke_session(authed(
            RevokeSessionRequest { session_id: phone.id.clone() },
            &laptop.access,
        ))
        .await
        .unwrap();
    let err = client
        .revoke_session(authed(
            RevokeSessionRequest { session_id: phone.id.clone() },
            &laptop.access,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "already ended");
    client.logout(authed(LogoutRequest {}, &laptop.access)).await.unwrap();
    assert!(app.refresh(&laptop.refresh).await.is_err());
    let left = app.sessions(&registered).await;
    assert_eq!(left.len(), 1, "{left:?}");

    // Everything but the current one.
    let (a, b) = (app.login("owner", "a").await.unwrap(), app.login("owner", "b").await.unwrap());
    let ended = client
        .revoke_other_sessions(authed(RevokeOtherSessionsRequest {}, &a.access))
        .await
        .answer()
        .revoked_count;
    assert_eq!(ended, 2, "the registration's and b's");
    assert!(app.refresh(&b.refresh).await.is_err());
    assert!(app.refresh(&a.refresh).await.is_ok());
    // A token without a session (minted elsewhere) cannot act for an account: the
    // account's RPCs need a session that is still active.
    client
        .logout(authed(LogoutRequest {}, &token_for(ObjectId::new())))
        .await
        .refused(Code::Unauthenticated);
}

#[tokio::test]
async fn an_account_keeps_its_sessions_in_use_and_a_login_past_them_ends_the_least_used() {
    let app = spawn_with(|c| c.sessions.per_account = 3).await;
    let (_, registered) = app.register("owner").await;
    app.register("other").await;
    let other = app.login("other", "other's").await.unwrap();
    let a = app.login("owner", "a").await.unwrap();
    let b = app.login("owner", "b").await.unwrap();
    // a is in use: refreshed after b started.
    let a_refresh = app.refresh(&a.refresh).await.unwrap().refresh_token;
    let c = app.login("owner", "c").await.unwrap();
    let d = app.login("owner", "d").await.unwrap();
    let listed = app.sessions(&d.access).await;
    let devices: Vec<&str> = listed.iter().map(|s| s.device.as_str()).collect();
    assert_eq!(devices, ["d", "c", "a"], "the three used last, newest first");
    // The registration's and b's ended: their tokens no longer refresh, nor act.
    assert!(app.refresh(&b.refresh).await.is_err());
    app.client
        .clone()
        .logout(authed(LogoutRequest {}, &registered))
        .await
        .refused(Code::Unauthenticated);
    for kept in [&a_refresh, &c.refresh, &d.refresh] {
        assert!(app.refresh(kept).await.is_ok());
    }
    // Another account's sessions are its own.
    assert!(app.refresh(&other.refresh).await.is_ok());
}

#[tokio::test]
async fn a_limit_lowered_below_what_an_account_holds_ends_the_rest_at_the_next_login() {
    let app = spawn().await;
    app.register("owner").await;
    for device in ["1", "2", "3", "4", "5", "6", "7"] {
        app.login("owner", device).await.unwrap();
    }
    // A replica with a limit of 2 reads the newest 4 sessions; the older ones end too.
    let mut config = social_user::Config::for_tests(
        &mongodb_uri(),
        &app._database.0,
        social_events::EventsConfig::for_tests(&social_testkit::unique_name("t")),
    );
    config.sessions.per_account = 2;
    let replica = start(|listener, shutdown| social_user::run(config, listener, shutdown)).await;
    let mut client = UserServiceClient::new(replica.channel().await);
    let last = login_on(&mut client, "owner", PASSWORD, "last").await.unwrap();
    let listed = app.sessions(&last.access).await;
    let devices: Vec<&str> = listed.iter().map(|s| s.device.as_str()).collect();
    assert_eq!(devices, ["last", "7"]);
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = spawn().await;
    app.register("changer").await;
    let (kept, other) =
        (app.login("changer", "here").await.unwrap(), app.login("changer", "there").await.unwrap());
    app.client
        .clone()
        .change_password(authed(
            ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "another long password".into(),
            },
            &kept.access,
        ))
        .await
        .unwrap();
    assert!(app.refresh(&other.refresh).await.is_err());
    assert!(app.refresh(&kept.refresh).await.is_ok());
}

/// The code, message and retry delay of a refused login.
fn refusal(status: &Status) -> (Code, String, Option<Duration>) {
    let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
    (status.code(), status.message().to_owned(), retry)
}

#[tokio::test]
async fn failed_logins_are_throttled_alike_for_real_and_unknown_accounts_on_every_replica() {
    let app = spawn_with(|c| {
        c.login_throttle.free = 3;
        c.login_throttle.first_block = Duration::from_secs(1);
        c.login_throttle.max_block = Duration::from_secs(8);
    })
    .await;
    app.register("alice").await;
    // A second replica on the same database.
    let mut config = social_user::Config::for_tests(
        &mongodb_uri(),
        &app._database.0,
        social_events::EventsConfig::for_tests(&social_testkit::unique_name("t")),
    );
    config.login_throttle = social_user::LoginThrottle {
        free: 3,
        first_block: Duration::from_secs(1),
        max_block: Duration::from_secs(8),
        window: Duration::from_secs(900),
        account_failures: 100,
    };
    let other = start(|l, s| social_user::run(config, l, s)).await;
    let mut replica = UserServiceClient::new(other.channel().await);

    for who in ["alice", "ghost"] {
        // Three failures, alternating replicas, count as three.
        for i in 0..3 {
            let err = if i % 2 == 0 {
                app.login_with(who, "wrong password", "").await
            } else {
                login_on(&mut replica, who, "wrong password", "").await
            }
            .err()
            .unwrap();
            assert_eq!(err.code(), Code::Unauthenticated);
        }
    }
    // The next attempt is refused before any password check, even the right password,
    // and the answer for a real account is the unknown one's.
    let real = app.login("alice", "").await.err().unwrap();
    let unknown = login_on(&mut replica, "ghost", PASSWORD, "").await.err().unwrap();
    let (code, message, retry) = refusal(&real);
    assert_eq!(code, Code::ResourceExhausted);
    assert!(retry.is_some());
    assert_eq!((code, message), {
        let (c, m, _) = refusal(&unknown);
        (c, m)
    });

    // After the delay: one more failure refuses for longer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = app.login_with("ghost", "wrong again", "").await.err().unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    let (_, _, retry) = refusal(&app.login("ghost", "").await.err().unwrap());
    let retry = retry.unwrap();
    assert!(retry > Duration::from_secs(1), "the delay grew: {retry:?}");

    // A success resets the count: the free failures are free again, and the right
    // password still works after them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.login("alice", "").await.unwrap();
    for _ in 0..2 {
        let err = app.login_with("alice", "wrong", "").await.err().unwrap();
        assert_eq!(err.code(), Code::Unauthenticated, "not throttled any more");
    }
    app.login("alice", "").await.unwrap();
}

#[tokio::test]
async fn the_ended_sessions_list_goes_on_inside_a_group_ended_together() {
    use social_proto::user::v1::ListEndedSessionsRequest;
    let app = spawn().await;
    let (_, owner) = app.register("alice").await;
    for device in ["phone", "laptop", "tablet"] {
        app.login("alice", device).await.unwrap();
    }
    // Three sessions ended by one call: one time.
    app.client
        .clone()
        .revoke_other_sessions(authed(RevokeOtherSessionsRequest {}, &owner))
        .await
        .unwrap();
    let list = |since, after: &str| {
        let mut client = app.client.clone();
        let request = social_testkit::as_service(ListEndedSessionsRequest {
            since,
            after_session_id: after.into(),
        });
        async move { client.list_ended_sessions(request).await }
    };
    let all = list(None, "").await.answer().sessions;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|s| s.ended_at == all[0].ended_at), "{all:?}");
    // A page that ended with the first goes on with the other two, in order.
    let rest = list(all[0].ended_at, &all[0].session_id).await.answer().sessions;
    assert_eq!(rest, all[1..]);
    // Without the session, after the time: none of the group.
    let after = list(all[0].ended_at, "").await.answer().sessions;
    assert!(after.is_empty(), "{after:?}");
    let err = list(all[0].ended_at, "nope").await.refused(Code::InvalidArgument);
    assert_eq!(social_testkit::violated_fields(&err), ["after_session_id"]);
}
