//! Load shedding: at most `MAX_REQUESTS_IN_FLIGHT` RPCs run at once in a process (until
//! their answer is ready; a stream's until it starts). One more is refused at once with
//! `UNAVAILABLE` and a retry delay, before it is decoded or queued: when the database
//! slows down, requests wait on it, and without a bound the waiting ones would grow the
//! process past its memory limit (an OOM kill, a restart, the others' load on the
//! remaining replicas: a storm). Health checks and reflection are never refused: a busy
//! replica is not a dead one.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{Code, codegen::http};
use tonic_types::{ErrorDetails, StatusExt};

/// The [`tower::Layer`] of [`Shed`].
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// At most `limit` RPCs at once (at least one; at most what a semaphore holds).
    pub fn new(limit: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit.clamp(1, Semaphore::MAX_PERMITS))) }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, permits: self.permits.clone() }
    }
}

/// Runs an RPC if a permit is free, else answers `UNAVAILABLE` at once.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

/// How long a refused client is told to wait.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Paths never refused: probes and tools must see a busy replica as alive.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B, R> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let permit = if exempt(request.uri().path()) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                // Counted by the RPC metrics and the access log around it (UNAVAILABLE).
                Err(_) => {
                    let status = tonic::Status::with_error_details(
                        Code::Unavailable,
                        "this replica has as many requests in flight as it takes; retry shortly",
                        ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
                    );
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(permit);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    /// A service whose answers wait until `release` is notified.
    fn held(
        release: Arc<tokio::sync::Notify>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = BoxFuture<'static, Result<http::Response<String>, Infallible>>,
    > + Clone {
        tower::service_fn(move |_: http::Request<()>| {
            let release = release.clone();
            Box::pin(async move {
                release.notified().await;
                Ok::<_, Infallible>(http::Response::new("done".to_owned()))
            }) as BoxFuture<'static, _>
        })
    }

    fn grpc_status(answer: &http::Response<String>) -> Option<&str> {
        answer.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn past_the_limit_rpcs_are_refused_at_once_and_health_checks_never() {
        let release = Arc::new(tokio::sync::Notify::new());
        let service = ShedLayer::new(2).layer(held(release.clone()));
        let call = |path: &str| {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            service.clone().oneshot(request)
        };
        let first = tokio::spawn(call("/social.post.v1.PostService/GetPost"));
        let second = tokio::spawn(call("/social.post.v1.PostService/GetPost"));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        // A third waits for nothing: refused, with a delay to retry after.
        let refused = tokio::time::timeout(
            Duration::from_secs(1),
            call("/social.post.v1.PostService/GetPost"),
        )
        .await
        .expect("refused at once")
        .unwrap();
        assert_eq!(grpc_status(&refused), Some("14"), "{refused:?}");
        // A health check is let through (and waits like any call).
        let health = tokio::spawn(call("/grpc.health.v1.Health/Check"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!health.is_finished(), "a health check was refused");

        release.notify_waiters();
        for answer in [first, second, health] {
            let answer = answer.await.unwrap().unwrap();
            assert_eq!(grpc_status(&answer), None, "{answer:?}");
        }
        // The permits came back.
        let after = tokio::spawn(call("/social.post.v1.PostService/GetPost"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.notify_waiters();
        let after = after.await.unwrap().unwrap();
        assert_eq!(grpc_status(&after), None, "{after:?}");
    }
}
