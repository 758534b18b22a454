//! Accounts and profiles: registration, unique usernames, login answers, reads, batch
//! reads, profile updates and password changes.

use super::*;
use social_testkit::{Answer, Refused};

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
    let own = c.get_user(authed(GetUserRequest { id: user.id.clone() }, &token)).await.answer();
    assert_eq!(own.email, "alice@example.com");
    let anon = c.get_user(GetUserRequest { id: user.id.clone() }).await.answer();
    assert_eq!(anon.email, "");
    let other = token_for(ObjectId::new());
    let seen = c.get_user(authed(GetUserRequest { id: user.id }, &other)).await.answer();
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
        .refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["username", "email", "password", "full_name"]);

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
    c.get_user_by_username(GetUserByUsernameRequest { username: "good_name".into() })
        .await
        .refused(Code::NotFound);
}

#[tokio::test]
async fn usernames_are_unique_case_insensitively_and_the_original_is_untouched() {
    let app = spawn().await;
    let (alice, _) = app.register("alice").await;
    let mut c = app.client.clone();
    let err = c
        .register(RegisterRequest { email: "other@example.com".into(), ..registration("Alice") })
        .await
        .refused(Code::AlreadyExists);
    assert_eq!(violated_fields(&err), ["username"]);
    assert!(err.message().contains("username"));

    let err = c
        .register(RegisterRequest { email: "ALICE@Example.com".into(), ..registration("alice2") })
        .await
        .refused(Code::AlreadyExists);
    assert_eq!(violated_fields(&err), ["email"]);

    // The stored user is the first one, with its password.
    let login = c
        .login(LoginRequest {
            username_or_email: "ALICE".into(),
            password: "correct horse battery".into(),
            device: String::new(),
        })
        .await
        .answer();
    assert_eq!(login.user.unwrap().id, alice.id);
}

// Several worker threads: the racing calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_name_make_one_account() {
    let app = spawn().await;
    let names = ["Bob", "bob", "BOB", "bOb", "boB", "BoB"];
    let attempts = names.iter().enumerate().map(|(i, name)| {
        let mut c = app.client.clone();
        let req = RegisterRequest { email: format!("bob{i}@example.com"), ..registration(name) };
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
        .answer();
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
    let err = c.get_user(GetUserRequest { id: "nope".into() }).await.refused(Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["id"]);
    c.get_user(GetUserRequest { id: ObjectId::new().to_hex() }).await.refused(Code::NotFound);

    let found =
        c.get_user_by_username(GetUserByUsernameRequest { username: "DAVE".into() }).await.answer();
    assert_eq!(found.id, dave.id);
    assert_eq!(found.username, "Dave");
    let err = c
        .get_user_by_username(GetUserByUsernameRequest { username: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["username"]);
    c.get_user_by_username(GetUserByUsernameRequest { username: "nobody_here".into() })
        .await
        .refused(Code::NotFound);
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
        .answer()
        .users;
    let ids: Vec<_> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, [frank.id.as_str(), erin.id.as_str()]);
    assert!(users.iter().all(|u| u.email.is_empty()));

    let err = c.batch_get_users(BatchGetUsersRequest { ids: vec![] }).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["ids"]);
    let err = c
        .batch_get_users(BatchGetUsersRequest { ids: vec![erin.id.clone(), "bad".into()] })
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
        .answer()
        .users;
    let names: Vec<_> = by_name.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["frank", "erin"]);
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
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

    c.update_user(update(&gina.id, "hi", "", &["bio"])).await.refused(Code::Unauthenticated);
    c.update_user(authed(update(&hank.id, "hi", "", &["bio"]), &token))
        .await
        .refused(Code::PermissionDenied);
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
        .refused(Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        ["user.bio", "user.profile_picture_url", "update_mask.paths"]
    );
    // A flooded mask is one violation, and a long path is named by its start.
    let long = "x".repeat(60_000);
    for paths in [vec!["bio"; 1000], vec![long.as_str()]] {
        let err = c
            .update_user(authed(update(&gina.id, "hi", "", &paths), &token))
            .await
            .refused(Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["update_mask.paths"]);
        assert!(err.message().len() < 200, "{}", err.message());
    }

    // The bad requests changed nothing.
    let unchanged = c.get_user(GetUserRequest { id: gina.id.clone() }).await.answer();
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
        .answer();
    assert_eq!(updated.bio, "Rust and coffee");
    assert_eq!(updated.profile_picture_url, "https://cdn.example.com/g.png");
    assert_eq!(updated.full_name, "Test User", "not in the mask, so not changed");
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
    c.change_password(change("x", "new password!")).await.refused(Code::Unauthenticated);
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

    c.change_password(authed(change("correct horse battery", "new password!"), &token))
        .await
        .unwrap();
    let login = |pw: &str| LoginRequest {
        username_or_email: "ivan".into(),
        password: pw.into(),
        device: String::new(),
    };
    assert!(c.login(login("new password!")).await.is_ok());
    assert_eq!(
        c.login(login("correct horse battery")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

/// A registration sent again with its idempotency key (its first answer was lost) gets
/// the account with a new session, not "taken"; the key alone, without the password,
/// gets nothing.
#[tokio::test]
async fn a_registration_retried_with_its_key_gets_a_session_and_the_key_alone_nothing() {
    let app = spawn().await;
    let mut c = app.client.clone();
    let keyed = |r: RegisterRequest, key: &str| {
        let mut request = tonic::Request::new(r);
        request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
        request
    };
    let first = c.register(keyed(registration("kim"), "k-1")).await.answer();
    let again = c.register(keyed(registration("kim"), "k-1")).await.answer();
    assert_eq!(again.user.unwrap().id, first.user.unwrap().id);
    assert_ne!(again.session_id, first.session_id);
    for (request, key) in [
        (
            RegisterRequest { password: "another horse battery".into(), ..registration("kim") },
            "k-1",
        ),
        (registration("kim"), "k-2"),
    ] {
        let err = c.register(keyed(request, key)).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{key}: {err:?}");
    }
    let err = c.register(keyed(registration("kim"), "with space")).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["idempotency-key"]);
}
