//! The gateway over HTTP, in front of every service started in-process: each route's
//! success and error paths, the error shape, pages, authors and actors embedded, the
//! live stream and its resume, rate limits, CORS, body limits, and services that are
//! down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod edge;
mod idempotency;
mod routes;
mod stream;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use social_testkit::{Running, Stack};

/// The stack, a gateway in front of it, and an HTTP client.
struct App {
    stack: Stack,
    _gateway: Running,
    base: String,
    http: reqwest::Client,
}

/// An answer: status, headers and JSON body (`Null` when there is none).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the Google error shape with `status` and `code`; returns the fields named.
    #[track_caller]
    fn error(&self, status: StatusCode, code: &str) -> Vec<String> {
        assert_eq!(self.status, status, "{}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["code"], status.as_u16(), "{}", self.body);
        assert_eq!(error["status"], code, "{}", self.body);
        assert!(error["message"].is_string(), "{}", self.body);
        error["details"]
            .as_array()
            .expect("details")
            .iter()
            .map(|d| d["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl App {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(change: impl FnOnce(&mut social_gateway::Config)) -> Self {
        Self::around(Stack::start().await, change).await
    }

    /// A gateway in front of `stack`, configured by `change`.
    async fn around(stack: Stack, change: impl FnOnce(&mut social_gateway::Config)) -> Self {
        let gateway = stack.gateway(change).await;
        Self {
            base: format!("http://{}", gateway.addr),
            _gateway: gateway,
            stack,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the gateway answers");
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        Answer { status, headers, body }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn put(&self, path: &str, token: &str) -> Answer {
        self.call(Method::PUT, path, Some(token), None).await
    }

    async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Signs `name` up; its id and access token.
    async fn sign_up(&self, name: &str) -> (String, String) {
        let a = self
            .post(
                "/v1/accounts",
                None,
                json!({
                    "username": name, "email": format!("{name}@example.com"),
                    "password": "correct horse battery",
                }),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        (
            a.body["user"]["id"].as_str().unwrap().to_owned(),
            a.body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Waits until `check` holds for the answer to GET `path`.
    async fn eventually(&self, path: &str, token: &str, check: impl Fn(&Value) -> bool) -> Value {
        let body = social_testkit::eventually(std::time::Duration::from_secs(15), || async {
            let a = self.get(path, Some(token)).await;
            check(&a.body).then_some(a.body)
        })
        .await;
        body.unwrap_or_else(|| panic!("{path} never matched"))
    }
}

/// A gRPC proxy in front of one service that counts the calls per method.
struct RpcCounter {
    addr: SocketAddr,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Server streams (answers whose body is still being read) open through it.
    open: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts an open answer down when its body is dropped.
struct OpenGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl RpcCounter {
    async fn start(target: SocketAddr) -> Self {
        use tower::{Service, ServiceExt};
        let channel = tonic::transport::Channel::from_shared(format!("http://{target}"))
            .unwrap()
            .connect_lazy();
        let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let open: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (counted, opened) = (calls.clone(), open.clone());
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (mut channel, calls, open) = (channel.clone(), counted.clone(), opened.clone());
            async move {
                let path = request.uri().path().to_owned();
                *calls.lock().unwrap().entry(path.clone()).or_default() += 1;
                let request = request.map(tonic::body::Body::new);
                let response = channel.ready().await.unwrap().call(request).await.unwrap();
                if !path.starts_with("/social.notification.v1.NotificationService/Stream") {
                    return response.map(axum::body::Body::new);
                }
                // A stream: counted open until the gateway lets go of it (its trailers
                // are not passed on; these streams are not meant to end in the test).
                open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let guard = OpenGuard(open);
                let (parts, body) = response.into_parts();
                let data = axum::body::Body::new(body).into_data_stream().map(move |chunk| {
                    let _held = &guard;
                    chunk
                });
                axum::http::Response::from_parts(parts, axum::body::Body::from_stream(data))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, calls, open, task }
    }

    /// A peer for the gateway's config that goes through this proxy.
    fn peer(&self, name: &'static str) -> social_kit::client::Peer {
        social_testkit::peer(
            name,
            &format!("http://{}", self.addr),
            std::time::Duration::from_secs(2),
        )
    }

    /// How many calls of `method` (`/package.Service/Method`) went through, since the last
    /// time asked.
    fn take(&self, method: &str) -> usize {
        self.calls.lock().unwrap().remove(method).unwrap_or(0)
    }
}

impl RpcCounter {
    /// Streams open through it now.
    fn open_streams(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RpcCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
