//! The HTTP server under the routes: HTTP/1.1 and HTTP/2 on one port, with limits on
//! every connection so that no client holds one (and its buffers) for ever:
//! - a client must say what it wants within `GATEWAY_HEADER_TIMEOUT_SECS`: the first
//!   bytes of a new connection (that tell HTTP/1 from HTTP/2), each HTTP/1 request's
//!   headers, and so the next request on an idle HTTP/1 keep-alive connection (75 s by
//!   default: longer than the idle time of the proxies in front, which would otherwise
//!   send a request on a connection as it closes);
//! - a write that makes no progress for `GATEWAY_WRITE_TIMEOUT_SECS` closes the
//!   connection: a client that stopped reading (an event stream left open in a frozen
//!   tab) does not pin what was written for it.
//!
//! HTTP/2 connections are pinged every 20 s and closed when a ping goes unanswered for
//! 20 s. At shutdown no new connection is accepted and the open ones are asked to close
//! after their requests (the caller bounds how long it waits).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo, middleware::AddExtension};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto::Builder,
        graceful::{GracefulConnection, GracefulShutdown},
    },
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

/// How long a client may take, per connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `GATEWAY_HEADER_TIMEOUT_SECS` (75): to start a connection, to send a request's
    /// headers, or to start the next request on an idle keep-alive connection.
    pub headers: Duration,
    /// `GATEWAY_WRITE_TIMEOUT_SECS` (30): to take any of what is written to it.
    pub write_stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { headers: Duration::from_secs(75), write_stall: Duration::from_secs(30) }
    }
}

/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const PING_EVERY: Duration = Duration::from_secs(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The routes, for one connection from a known address.
type Connected = AddExtension<Router, ConnectInfo<SocketAddr>>;

/// What opens an HTTP/2 connection: until its first bytes depart from it, a connection
/// has not said which protocol it speaks.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `tcp` says which protocol it speaks within `limit`: a first byte that departs
/// from the HTTP/2 preface, or the whole preface. (The detection under the server waits
/// for them with no limit of its own.) Nothing is read, only looked at.
async fn speaks_within(tcp: &TcpStream, limit: Duration) -> bool {
    let told = async {
        let mut first = [0; 24];
        loop {
            let n = tcp.peek(&mut first).await?;
            if n == 0 || n >= H2_PREFACE.len() || first[..n] != H2_PREFACE[..n] {
                return Ok::<_, std::io::Error>(n > 0);
            }
            // A prefix of the preface: look again once more has come (peek answers at
            // once while anything is there).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    matches!(tokio::time::timeout(limit, told).await, Ok(Ok(true)))
}

/// Serves connections with [`Timeouts`].
#[derive(Clone)]
pub struct Server {
    builder: Builder<TokioExecutor>,
    timeouts: Timeouts,
}

impl Server {
    pub fn new(timeouts: Timeouts) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(timeouts.headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_EVERY);
        Self { builder, timeouts }
    }

    /// One connection over `io`, answered by `service`; it ends when the client closes
    /// it, breaks a limit, or (once watched by a [`GracefulShutdown`]) at shutdown.
    fn connection<I>(
        &self,
        io: I,
        service: Connected,
    ) -> impl GracefulConnection<Error = BoxError> + Send + 'static
    where
        I: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut io = TimeoutStream::new(io);
        io.set_write_timeout(Some(self.timeouts.write_stall));
        let io = TokioIo::new(Box::pin(io));
        let service =
            service.map_request(|request: axum::http::Request<Incoming>| request.map(Body::new));
        self.builder.serve_connection(io, TowerToHyperService::new(service)).into_owned()
    }

    /// Serves `app` on `listener` until `shutdown`, then waits for the open connections
    /// to finish (the caller bounds the wait).
    pub async fn serve(&self, listener: TcpListener, app: Router, shutdown: CancellationToken) {
        let mut app = app.into_make_service_with_connect_info::<SocketAddr>();
        let graceful = GracefulShutdown::new();
        let server = Arc::new(self.clone());
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: a pause, not an end.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            // Answers at once and never fails (its error type is `Infallible`).
            let service = match app.call(peer).await {
                Ok(service) => service,
                Err(never) => match never {},
            };
            let (server, watcher) = (server.clone(), graceful.watcher());
            tokio::spawn(async move {
                if !speaks_within(&tcp, server.timeouts.headers).await {
                    tracing::debug!(%peer, "closed a connection that said nothing in time");
                    return;
                }
                if let Err(e) = watcher.watch(server.connection(tcp, service)).await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
        graceful.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// 4 MiB for `GET /big`, far more than the pipe between client and server holds.
    async fn app() -> Connected {
        let mut make = Router::new()
            .route("/big", get(|| async { vec![b'x'; 4 << 20] }))
            .into_make_service_with_connect_info::<SocketAddr>();
        make.call(PEER).await.unwrap()
    }

    fn server(headers_ms: u64, write_stall_ms: u64) -> Server {
        Server::new(Timeouts {
            headers: Duration::from_millis(headers_ms),
            write_stall: Duration::from_millis(write_stall_ms),
        })
    }

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[tokio::test]
    async fn a_connection_that_says_nothing_or_half_a_preface_in_time_is_dropped() {
        let listener = TcpListener::bind((PEER.ip(), 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (start, speaks) in
            [(&b""[..], false), (b"PRI * HTTP/2.0\r\n", false), (b"G", true), (H2_PREFACE, true)]
        {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(start).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let spoke = speaks_within(&tcp, Duration::from_millis(300)).await;
            assert_eq!(spoke, speaks, "{:?}", String::from_utf8_lossy(start));
        }
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (mut client, io) = tokio::io::duplex(64 * 1024);
        let connection = server(200, 30_000).connection(io, app().await);
        client.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(ended.is_ok(), "the connection was still open after 5 s");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off_and_one_that_reads_is_not() {
        let (mut client, io) = tokio::io::duplex(64 * 1024);
        let connection = server(10_000, 200).connection(io, app().await);
        client.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        // It never reads.
        let ended = tokio::time::timeout(Duration::from_secs(5), connection)
            .await
            .expect("the connection was still open after 5 s");
        assert!(ended.is_err(), "it ends by its write timing out");

        // The same limit, a client that reads slowly but steadily: all of it arrives.
        let (mut client, io) = tokio::io::duplex(64 * 1024);
        let connection = server(10_000, 200).connection(io, app().await);
        let served = tokio::spawn(connection);
        client
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0; 256 * 1024];
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let n = client.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.len() > 4 << 20, "the whole body: {} bytes", got.len());
        served.await.unwrap().unwrap();
    }
}
