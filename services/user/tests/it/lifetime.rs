//! A session outlives neither its account nor a change of its password, whatever fails
//! or races: a deletion whose session cleanup failed, a login racing a deletion or a
//! password change, a refresh after either.

use std::time::Duration;

use bson::{doc, oid::ObjectId};
use social_proto::user::v1::{ChangePasswordRequest, DeleteAccountRequest, LoginRequest};
use tonic::{Code, Status};

use crate::{App, spawn};

use social_testkit::PASSWORD;

impl App {
    /// `user`'s sessions that are still active, as stored.
    async fn active_sessions(&self, user: &str) -> usize {
        use futures::TryStreamExt;
        let db = mongodb::Client::with_uri_str(social_testkit::mongodb_uri())
            .await
            .unwrap()
            .database(&self._database.0);
        let found: Vec<bson::Document> = db
            .collection::<bson::Document>("sessions")
            .find(doc! {
                "user_id": { "$in": [ObjectId::parse_str(user).unwrap()] }, "state": "active",
            })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        found.len()
    }

    async fn delete_account(&self, access: &str) -> Result<(), Status> {
        self.client
            .clone()
            .delete_account(social_testkit::authed(
                DeleteAccountRequest { password: PASSWORD.into() },
                access,
            ))
            .await
            .map(drop)
    }

    /// Logs in, returning (access token, refresh token).
    async fn log_in(&self, who: &str) -> Result<(String, String), Status> {
        let r = self
            .client
            .clone()
            .login(LoginRequest {
                username_or_email: who.into(),
                password: PASSWORD.into(),
                device: String::new(),
            })
            .await?
            .into_inner();
        Ok((r.access_token, r.refresh_token))
    }

    async fn refresh_with(&self, token: &str) -> Result<(), Status> {
        self.client
            .clone()
            .refresh_session(social_proto::user::v1::RefreshSessionRequest {
                refresh_token: token.into(),
            })
            .await
            .map(drop)
    }
}

#[tokio::test]
async fn deleting_an_account_again_ends_the_sessions_a_failed_try_left() {
    let app = spawn().await;
    let (user, _) = app.register("alice").await;
    let (phone, _) = app.log_in("alice").await.unwrap();
    app.log_in("alice").await.unwrap();
    // The account is marked deleted, then its session cleanup fails.
    fail::cfg("user::end_sessions", "1*return").unwrap();
    let err = app.delete_account(&phone).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(social_kit::faults::fired("user::end_sessions"), 1);
    assert_eq!(app.active_sessions(&user.id).await, 3, "the cleanup did not run");
    // The client retries: the account is deleted already, and its sessions end now.
    app.delete_account(&phone).await.unwrap();
    assert_eq!(app.active_sessions(&user.id).await, 0);
}

#[tokio::test]
async fn a_session_the_deletion_of_its_account_left_active_cannot_be_refreshed() {
    let app = spawn().await;
    let (user, _) = app.register("alice").await;
    let (phone, phone_refresh) = app.log_in("alice").await.unwrap();
    fail::cfg("user::end_sessions", "1*return").unwrap();
    app.delete_account(&phone).await.unwrap_err();
    assert_eq!(app.active_sessions(&user.id).await, 2, "the cleanup did not run");
    let err = app.refresh_with(&phone_refresh).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(app.active_sessions(&user.id).await, 1, "the refresh ended its session");
}

#[tokio::test]
async fn a_password_change_whose_end_of_the_other_sessions_failed_leaves_them_powerless() {
    let app = spawn().await;
    let (user, owner) = app.register("alice").await;
    let (thief, _) = app.log_in("alice").await.unwrap();
    // The password is changed, then the end of the other sessions fails: the thief's
    // session is still marked active.
    fail::cfg("user::end_sessions", "1*return").unwrap();
    let err = app
        .client
        .clone()
        .change_password(social_testkit::authed(
            ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "a brand new passphrase".into(),
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(social_kit::faults::fired("user::end_sessions"), 1);
    assert_eq!(app.active_sessions(&user.id).await, 2, "the cleanup did not run");
    // It cannot act for the account: it was started under the old password.
    let err = app
        .client
        .clone()
        .revoke_other_sessions(social_testkit::authed(
            social_proto::user::v1::RevokeOtherSessionsRequest {},
            &thief,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // The owner's session, carried over to the new password, can.
    app.client
        .clone()
        .revoke_other_sessions(social_testkit::authed(
            social_proto::user::v1::RevokeOtherSessionsRequest {},
            &owner,
        ))
        .await
        .unwrap();
    assert_eq!(app.active_sessions(&user.id).await, 1);
}

/// Holds the next login between its password check and its session for `ms`.
fn hold_the_next_login(ms: u64) {
    fail::cfg("user::before_session", &format!("1*return({ms})")).unwrap();
}

#[tokio::test]
async fn a_login_racing_the_deletion_of_its_account_keeps_no_session() {
    let app = spawn().await;
    let (user, first) = app.register("alice").await;
    hold_the_next_login(1500);
    let login = app.log_in("alice");
    let delete = async {
        // Once the login checked the password and waits to store its session.
        let held = social_testkit::eventually(Duration::from_secs(10), || async {
            (social_kit::faults::fired("user::before_session") > 0).then_some(())
        })
        .await;
        assert!(held.is_some(), "the login was not held");
        app.delete_account(&first).await
    };
    let (login, deleted) = tokio::join!(login, delete);
    deleted.unwrap();
    let err = login.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(app.active_sessions(&user.id).await, 0);
}

#[tokio::test]
async fn a_login_racing_a_password_change_gets_no_session_under_the_old_password() {
    let app = spawn().await;
    let (user, first) = app.register("alice").await;
    hold_the_next_login(1500);
    let login = app.log_in("alice");
    let change = async {
        let held = social_testkit::eventually(Duration::from_secs(10), || async {
            (social_kit::faults::fired("user::before_session") > 0).then_some(())
        })
        .await;
        assert!(held.is_some(), "the login was not held");
        app.client
            .clone()
            .change_password(social_testkit::authed(
                ChangePasswordRequest {
                    old_password: PASSWORD.into(),
                    new_password: "a brand new passphrase".into(),
                },
                &first,
            ))
            .await
    };
    let (login, changed) = tokio::join!(login, change);
    changed.unwrap();
    let err = login.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Only the session that changed the password is left.
    assert_eq!(app.active_sessions(&user.id).await, 1);
}
