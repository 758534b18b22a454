//! What the graph service takes from the user service: unavailable or silent, and a
//! session that ended.

use super::*;
use social_testkit::Answer;

#[tokio::test]
async fn a_down_user_service_is_unavailable_and_a_silent_one_times_out() {
    // Nothing listens on port 1.
    let app =
        spawn_with_user_service(Some("http://127.0.0.1:1".into()), Duration::from_millis(500))
            .await;
    let err = app.follow(&token_for(ObjectId::new()), &ObjectId::new().to_hex()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // A peer that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app = spawn_with_user_service(Some(url), Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let err = app.follow(&token_for(ObjectId::new()), &ObjectId::new().to_hex()).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn a_session_that_ended_is_refused_here_within_moments_and_by_a_replica_started_later() {
    use social_proto::user::v1::{LoginRequest, LogoutRequest};
    let app = spawn().await;
    let (bob, _) = app.user("bob").await;
    app.user("alice").await;
    let login = app
        .stack
        .users()
        .await
        .login(LoginRequest {
            username_or_email: "alice".into(),
            password: "correct horse battery".into(),
            device: String::new(),
        })
        .await
        .answer();
    let token = login.access_token;
    app.follow(&token, &bob).await.unwrap();
    app.stack.users().await.logout(authed(LogoutRequest {}, &token)).await.unwrap();
    // The token is unexpired, but its session ended: refused here within moments.
    let refused = |graph: SocialGraphServiceClient<Channel>| {
        let (token, bob) = (token.clone(), bob.clone());
        social_testkit::eventually(Duration::from_secs(5), move || {
            let (mut graph, token, bob) = (graph.clone(), token.clone(), bob.clone());
            async move {
                // Following again changes nothing while the token still works.
                let request = authed(FollowRequest { followee_id: bob }, &token);
                match graph.follow(request).await {
                    Err(e) if e.code() == Code::Unauthenticated => Some(()),
                    _ => None,
                }
            }
        })
    };
    assert!(refused(app.graph.clone()).await.is_some(), "still accepted");
    // A replica that starts afterwards (it heard no broadcast) asks the user service.
    let replica = social_testkit::start_graph(
        &app.stack.database,
        &app.stack.events,
        &format!("http://{}", app.stack.user.addr),
        Duration::from_secs(2),
    )
    .await;
    let graph = SocialGraphServiceClient::new(replica.channel().await);
    assert!(refused(graph).await.is_some(), "the new replica accepted it");
    assert_eq!(app.followers(&bob, 100, "").await.0.len(), 1);
}
