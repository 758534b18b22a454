//! Usernames and emails are held through reservations keyed by the value, not unique
//! indexes on `users` (which a sharded `users` could not enforce): registrations racing
//! on two replicas, one pausing until its reservation is taken over, one that stopped
//! half-way, a deleted account's values, and accounts stored before reservations.

use std::time::Duration;

use bson::{Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use social_proto::user::v1::{
    DeleteAccountRequest, GetUserByUsernameRequest, LoginRequest, RegisterRequest,
    user_service_client::UserServiceClient,
};
use social_testkit::{Answer, Running, authed, mongodb_uri, start, unique_name, violated_fields};
use tonic::{Code, Status, transport::Channel};

use crate::{App, registration, spawn};

impl App {
    async fn db(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap().database(&self._database.0)
    }

    fn config(&self) -> social_user::Config {
        social_user::Config::for_tests(
            &mongodb_uri(),
            &self._database.0,
            social_events::EventsConfig::for_tests(&unique_name("t")),
        )
    }

    /// Another replica of the service on the same database.
    async fn replica(&self) -> (Running, UserServiceClient<Channel>) {
        let config = self.config();
        let running =
            start(|listener, shutdown| social_user::run(config, listener, shutdown)).await;
        let client = UserServiceClient::new(running.channel().await);
        (running, client)
    }

    /// The reservations of `collection` (`usernames`, `emails`) whose value is `value`.
    async fn reservations(&self, collection: &str, value: &str) -> Vec<Document> {
        self.db()
            .await
            .collection::<Document>(collection)
            .find(doc! { "_id": value })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    /// The keys of the unique indexes on `users` other than `_id`'s.
    async fn unique_indexes_on_users(&self) -> Vec<Document> {
        let indexes: Vec<mongodb::IndexModel> = self
            .db()
            .await
            .collection::<Document>("users")
            .list_indexes()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        indexes
            .into_iter()
            .filter(|i| i.keys != doc! { "_id": 1 })
            .filter(|i| i.options.as_ref().and_then(|o| o.unique) == Some(true))
            .map(|i| i.keys)
            .collect()
    }

    /// How many stored accounts (deleted or not) have `username_lower`.
    async fn accounts_named(&self, username_lower: &str) -> usize {
        let all: Vec<Document> = self
            .db()
            .await
            .collection::<Document>("users")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        all.iter().filter(|u| u.get_str("username_lower").ok() == Some(username_lower)).count()
    }
}

fn keyed(r: RegisterRequest, key: &str) -> tonic::Request<RegisterRequest> {
    let mut request = tonic::Request::new(r);
    request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
    request
}

fn assert_taken(result: &Result<impl std::fmt::Debug, Status>, field: &str) {
    let err = result.as_ref().unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(violated_fields(err), [field], "{err:?}");
}

fn login(who: &str) -> LoginRequest {
    LoginRequest {
        username_or_email: who.into(),
        password: "correct horse battery".into(),
        device: String::new(),
    }
}

// Several worker threads: the racing calls are handled in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_or_email_registered_at_the_same_moment_on_two_replicas_goes_to_one_account() {
    let app = spawn().await;
    let (_replica, other) = app.replica().await;
    let clients = [app.client.clone(), other];
    // Six registrations of one username (other emails), six of one email (other
    // usernames), spread over both replicas and polled together.
    let attempts = (0..12).map(|i| {
        let mut c = clients[i % 2].clone();
        let request = if i < 6 {
            RegisterRequest {
                email: format!("dana{i}@example.com"),
                ..registration(if i % 3 == 0 { "Dana" } else { "dana" })
            }
        } else {
            RegisterRequest {
                email: "shared@example.com".into(),
                ..registration(&format!("erin{i}"))
            }
        };
        async move { c.register(request).await }
    });
    let results = futures::future::join_all(attempts).await;
    let (names, emails) = results.split_at(6);
    for (group, field) in [(names, "username"), (emails, "email")] {
        assert_eq!(group.iter().filter(|r| r.is_ok()).count(), 1, "{group:?}");
        for r in group.iter().filter(|r| r.is_err()) {
            assert_taken(r, field);
        }
    }
    assert_eq!(app.accounts_named("dana").await, 1);
    // The reservations decided: `users` has no unique index but `_id`'s, so it can be
    // sharded by `_id`.
    assert_eq!(app.unique_indexes_on_users().await, Vec::<Document>::new());
    for (collection, value) in [("usernames", "dana"), ("emails", "shared@example.com")] {
        let held = app.reservations(collection, value).await;
        assert_eq!(held.len(), 1);
        assert!(held[0].get_i64("confirmed_ms").is_ok(), "{held:?}");
    }
    // The losers gave back what they had reserved.
    let winner = emails.iter().find_map(|r| r.as_ref().ok()).unwrap();
    let winner = winner.get_ref().user.as_ref().unwrap().username.to_lowercase();
    for i in 6..12 {
        let name = format!("erin{i}");
        assert_eq!(app.reservations("usernames", &name).await.len(), usize::from(name == winner));
    }
}

#[tokio::test]
async fn a_registration_whose_reservation_is_taken_over_before_it_stores_the_account_stores_none() {
    let app = spawn().await;
    const POINT: &str = "user::before_account_insert";
    // The first registration reserves "fay" and her email, then waits before storing
    // the account; meanwhile its reservation is aged past the minute a registration in
    // flight keeps it (as a pause that long would), and a rival registers "fay".
    fail::cfg(POINT, "return(1500)").unwrap();
    let mut c = app.client.clone();
    let slow = c.register(registration("fay"));
    let rival = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fail::remove(POINT);
        let aged = app
            .db()
            .await
            .collection::<Document>("usernames")
            .update_one(doc! { "_id": "fay" }, doc! { "$set": { "at_ms": 0_i64 } })
            .await
            .unwrap();
        assert_eq!(aged.matched_count, 1, "the first registration reserved the name");
        let request =
            RegisterRequest { email: "fay.rival@example.com".into(), ..registration("fay") };
        app.client.clone().register(request).await
    };
    let (slow, rival) = tokio::join!(slow, rival);
    assert_eq!(social_kit::faults::fired(POINT), 1);
    let rival = rival.unwrap().into_inner().user.unwrap();
    assert_taken(&slow, "username");
    // One account holds the name, the rival's; the slow one's is gone with its email's
    // reservation.
    assert_eq!(app.accounts_named("fay").await, 1);
    let found = app
        .client
        .clone()
        .get_user_by_username(GetUserByUsernameRequest { username: "fay".into() })
        .await
        .answer();
    assert_eq!(found.id, rival.id);
    let request = RegisterRequest { email: "fay@example.com".into(), ..registration("fay2") };
    app.client.clone().register(request).await.unwrap();
}

#[tokio::test]
async fn a_registration_stopped_half_way_holds_its_name_a_minute_and_tells_its_retry_to_wait() {
    let app = spawn().await;
    // What a registration leaves when it stops after reserving, before storing its
    // account (its process killed).
    let usernames = app.db().await.collection::<Document>("usernames");
    let now = bson::DateTime::now().timestamp_millis();
    usernames
        .insert_one(doc! {
            "_id": "gil", "user_id": ObjectId::new(), "at_ms": now, "request_key": "k-9",
        })
        .await
        .unwrap();
    let mut c = app.client.clone();
    let err = c.register(keyed(registration("gil"), "k-9")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_taken(&c.register(keyed(registration("gil"), "k-10")).await, "username");
    assert_taken(&c.register(registration("gil")).await, "username");
    // A minute on, the name is free again; its retry takes it.
    usernames
        .update_one(doc! { "_id": "gil" }, doc! { "$set": { "at_ms": now - 61_000 } })
        .await
        .unwrap();
    let gil = c.register(keyed(registration("gil"), "k-9")).await.answer();
    let held = app.reservations("usernames", "gil").await;
    assert_eq!(held[0].get_object_id("user_id").unwrap().to_hex(), gil.user.unwrap().id);
}

#[tokio::test]
async fn a_registration_whose_stored_account_lost_its_answer_is_one_account_when_retried() {
    let app = spawn().await;
    const POINT: &str = "user::insert_answer_lost";
    fail::cfg(POINT, "1*return").unwrap();
    let mut c = app.client.clone();
    c.register(keyed(registration("kai"), "k-1")).await.unwrap_err();
    assert_eq!(social_kit::faults::fired(POINT), 1);
    // The account was stored: its reservations stay with it, and its retry gets it.
    let again = c.register(keyed(registration("kai"), "k-1")).await.answer();
    assert_eq!(app.accounts_named("kai").await, 1);
    let stored = app.reservations("usernames", "kai").await;
    assert_eq!(stored[0].get_object_id("user_id").unwrap().to_hex(), again.user.unwrap().id);
    assert_taken(&c.register(registration("kai")).await, "username");
}

#[tokio::test]
async fn a_deleted_accounts_email_is_free_at_once_and_its_username_once_it_is_purged() {
    let app = spawn().await;
    let (hal, token) = app.register("hal").await;
    app.client
        .clone()
        .delete_account(authed(
            DeleteAccountRequest { password: "correct horse battery".into() },
            &token,
        ))
        .await
        .unwrap();
    let mut c = app.client.clone();
    let reuse_email = RegisterRequest { email: "hal@example.com".into(), ..registration("hal2") };
    c.register(reuse_email).await.unwrap();
    let reuse_name = || RegisterRequest { email: "hal3@example.com".into(), ..registration("hal") };
    assert_taken(&c.register(reuse_name()).await, "username");
    // The quarantine's end purges the account.
    app.db()
        .await
        .collection::<Document>("users")
        .delete_one(doc! { "_id": ObjectId::parse_str(&hal.id).unwrap() })
        .await
        .unwrap();
    let again = c.register(reuse_name()).await.answer();
    assert_ne!(again.user.unwrap().id, hal.id);
}

#[tokio::test]
async fn accounts_stored_before_reservations_are_found_and_held_until_reserve_names_gives_them_theirs()
 {
    let app = spawn().await;
    let (ivy, _) = app.register("ivy").await;
    app.register("jon").await;
    // As a release before reservations left them: none, and unique indexes on `users`.
    let db = app.db().await;
    for collection in ["usernames", "emails"] {
        db.collection::<Document>(collection).drop().await.unwrap();
    }
    // And a reservation of jon's name that this release left when the old index refused
    // its account (the registration stopped before giving it up).
    db.collection::<Document>("usernames")
        .insert_one(doc! { "_id": "jon", "user_id": ObjectId::new(), "at_ms": 0_i64 })
        .await
        .unwrap();
    let users = db.collection::<Document>("users");
    for (name, field) in [("username_lower_unique", "username_lower"), ("email_unique", "email")] {
        let options =
            mongodb::options::IndexOptions::builder().name(name.to_owned()).unique(true).build();
        let model = mongodb::IndexModel::builder().keys(doc! { field: 1 }).options(options).build();
        users.create_index(model).await.unwrap();
    }
    // A replica of this release started on it finds them and keeps them theirs.
    let (_replica, mut c) = app.replica().await;
    for who in ["ivy", "IVY", "ivy@example.com"] {
        let found = c.login(login(who)).await.answer();
        assert_eq!(found.user.unwrap().id, ivy.id, "{who}");
    }
    let jon = c.login(login("jon")).await.answer().user.unwrap();
    let by_name =
        c.get_user_by_username(GetUserByUsernameRequest { username: "Ivy".into() }).await.unwrap();
    assert_eq!(by_name.into_inner().id, ivy.id);
    let same_name = || RegisterRequest { email: "ivy2@example.com".into(), ..registration("ivy") };
    let same_email = || RegisterRequest { email: "ivy@example.com".into(), ..registration("ivy2") };
    assert_taken(&c.register(same_name()).await, "username");
    assert_taken(&c.register(same_email()).await, "email");
    // The operator's step once every replica runs this release.
    let said = social_user::reserve_names(&app.config()).await.unwrap();
    assert!(said.contains(r#""reservations_made":4"#), "{said}");
    assert_eq!(app.unique_indexes_on_users().await, Vec::<Document>::new());
    assert_eq!(app.reservations("emails", "jon@example.com").await.len(), 1);
    let held = app.reservations("usernames", "jon").await;
    assert_eq!(held[0].get_object_id("user_id").unwrap().to_hex(), jon.id);
    let found = c.login(login("ivy")).await.answer();
    assert_eq!(found.user.unwrap().id, ivy.id);
    assert_taken(&c.register(same_name()).await, "username");
    assert_taken(&c.register(same_email()).await, "email");
}
