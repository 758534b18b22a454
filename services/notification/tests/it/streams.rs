//! Live streams: across replicas, a reader that never reads, shutdown, and the end of
//! a token or a session.

use super::*;
use social_testkit::Answer;

#[tokio::test]
async fn a_stream_on_one_replica_sees_what_another_stored() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    // This replica consumes no events: whatever reaches its stream was stored elsewhere.
    let reader = app.stack.notification_replica(false).await;
    let mut client = NotificationServiceClient::new(reader.channel().await);
    let mut stream = app.stream(&mut client, &bob).await;
    // Its broadcast queue binds just after start-up: follow until one arrives.
    let mut got = None;
    for _ in 0..20 {
        app.follow(&token_for(ObjectId::new()), &bob_id).await;
        if let Some(n) = next(&mut stream, Duration::from_millis(750)).await {
            got = Some(n);
            break;
        }
    }
    let n = got.expect("the stream on the other replica saw nothing");
    assert_eq!(kind(&n), NotificationType::Follow);
    assert_eq!(n.user_id, bob_id);

    // Two streams of one user each get every notification.
    let mut second = app.stream(&mut client, &bob).await;
    let fan = ObjectId::new();
    app.follow(&token_for(fan), &bob_id).await;
    let on_second = loop {
        let n = next(&mut second, WAIT).await.expect("second stream");
        if n.source_user_id == fan.to_hex() {
            break n;
        }
    };
    let on_first = loop {
        let n = next(&mut stream, WAIT).await.expect("first stream");
        if n.source_user_id == fan.to_hex() {
            break n;
        }
    };
    assert_eq!(on_first.id, on_second.id);
}

#[tokio::test]
async fn a_stream_that_never_reads_slows_nobody() {
    let app = App::start().await;
    let (bob_id, bob) = app.stack.register("bob").await;
    // A client that never reads, on a connection whose streams take 512 bytes before
    // their window is full (a few notifications): what it cannot take waits in the
    // service's 64-slot buffer of its stream, which the fans below overflow.
    let stalled_channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.stack.notification.addr))
            .unwrap()
            .initial_stream_window_size(Some(512))
            .connect()
            .await
            .unwrap();
    let mut stalled_client = NotificationServiceClient::new(stalled_channel);
    let mut stalled = app.stream(&mut stalled_client, &bob).await; // never read
    let mut client = app.notifications.clone();
    let mut live = app.stream(&mut client, &bob).await;
    let fans = 100;
    for _ in 0..fans {
        app.follow(&token_for(ObjectId::new()), &bob_id).await;
    }
    let mut received = 0;
    while received < fans {
        next(&mut live, WAIT).await.expect("the live stream kept up");
        received += 1;
    }
    assert_eq!(app.wait_for(&bob, fans).await.len(), fans);
    // The stalled stream overflowed: it gives what it had buffered, then its end.
    let mut buffered = 0;
    let end = loop {
        match tokio::time::timeout(WAIT, stalled.message()).await {
            Ok(Ok(Some(_))) => buffered += 1,
            other => break other,
        }
    };
    assert!(buffered < fans, "the stalled stream got all {buffered}");
    match end {
        Ok(Err(status)) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        other => panic!("the stalled stream did not end as overflowed: {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_ends_streams_unavailable_and_reports_not_serving() {
    let app = App::start().await;
    let (_, bob) = app.stack.register("bob").await;
    let replica = app.stack.notification_replica(false).await;
    let addr = replica.addr;
    let mut client = NotificationServiceClient::new(replica.channel().await);
    let mut stream = app.stream(&mut client, &bob).await;
    // Health watched by name, as a balancer or a peer would: SERVING now.
    let mut health = tonic_health::pb::health_client::HealthClient::new(replica.channel().await)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "social.notification.v1.NotificationService".into(),
        })
        .await
        .answer();
    let status = |m: Option<tonic_health::pb::HealthCheckResponse>| {
        tonic_health::pb::health_check_response::ServingStatus::try_from(m.unwrap().status).unwrap()
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(status(health.message().await.unwrap()), ServingStatus::Serving);

    let stopped = tokio::spawn(replica.stop());
    // Health says NOT_SERVING as the shutdown begins (so balancers stop sending)...
    let next_status = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("a health change");
    assert_eq!(status(next_status.unwrap()), ServingStatus::NotServing);
    drop(health);
    // ...and the stream ends, well inside the shutdown grace, with UNAVAILABLE: the
    // client can tell a replica going away from a finished stream, and reopens it.
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(matches!(&end, Ok(Err(s)) if s.code() == tonic::Code::Unavailable), "{end:?}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the replica stopped in time")
        .unwrap()
        .unwrap();
    // And it no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = App::start().await;
    let (bob_id, _) = app.stack.register("bob").await;
    let short = token_expiring_in(ObjectId::parse_str(&bob_id).unwrap(), Duration::from_secs(2));
    let mut client = app.notifications.clone();
    let mut stream = app.stream(&mut client, &short).await;
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    match end {
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        other => panic!("expected UNAUTHENTICATED at expiry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_session_does() {
    let app = App::start().await;
    let (_, token) = app.stack.register("bob").await;
    let mut client = app.notifications.clone();
    let mut stream = app.stream(&mut client, &token).await;
    // Bob logs out (or a thief's session is revoked): the stream it opened is cut, long
    // before its token would expire.
    app.stack
        .users()
        .await
        .logout(authed(social_proto::user::v1::LogoutRequest {}, &token))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    match end {
        Ok(Err(status)) => {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains("session ended"), "{status:?}");
        }
        other => panic!("expected UNAUTHENTICATED once the session ended, got {other:?}"),
    }
}
