//! `/healthz` and `/readyz`: what the platform's probes ask.

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::context::AppState;

/// The probes' routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// `/healthz`: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: whether this gateway takes requests: 200 while it runs, 503 once it is
/// stopping (so that its balancer drains it). A service that is down does not make it
/// unready: its routes answer 503 and the others go on (every gateway pod leaving the
/// balancer would take them all down). The body names the services whose health,
/// asked by name at most once a second, is not `SERVING`, for operators and scripts.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    use social_proto::{
        engagement::v1::engagement_service_server, graph::v1::social_graph_service_server,
        notification::v1::notification_service_server, post::v1::post_service_server,
        user::v1::user_service_server,
    };
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut last = state.settings.readiness.lock().await;
    let down = match last.as_ref() {
        Some((at, down)) if at.elapsed() < Duration::from_secs(1) => down.clone(),
        _ => {
            let s = &state.services;
            let checks = [
                ("user", user_service_server::SERVICE_NAME, &s.users),
                ("post", post_service_server::SERVICE_NAME, &s.posts),
                ("social-graph", social_graph_service_server::SERVICE_NAME, &s.graph),
                ("engagement", engagement_service_server::SERVICE_NAME, &s.engagement),
                ("notification", notification_service_server::SERVICE_NAME, &s.notifications),
            ]
            .map(|(name, service, peer)| async move {
                let mut client = HealthClient::new(peer.channel());
                let request = HealthCheckRequest { service: service.to_owned() };
                let serving = peer
                    .call(client.check(peer.request(request)))
                    .await
                    .is_ok_and(|r| r.status == 1);
                (!serving).then_some(name)
            });
            let down: Vec<&'static str> =
                futures::future::join_all(checks).await.into_iter().flatten().collect();
            *last = Some((std::time::Instant::now(), down.clone()));
            down
        }
    };
    drop(last);
    let (status, word) = if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else {
        (StatusCode::OK, "ready")
    };
    (status, Json(serde_json::json!({ "status": word, "not_serving": down })))
}
