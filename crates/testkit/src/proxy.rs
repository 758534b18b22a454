//! A TCP proxy that a test can cut and restore, to play a broker (or any peer) going
//! away and coming back: cutting drops every open connection and refuses new ones.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Mutex,
};
use tokio_util::sync::CancellationToken;

/// A running proxy to one target. Dropping it stops it.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    accepted: Arc<std::sync::Mutex<Vec<Instant>>>,
    /// Milliseconds by which the target's bytes are held back.
    lag: Arc<AtomicU64>,
    /// Connections being proxied now.
    open: Arc<AtomicUsize>,
}

/// Counts a proxied connection while it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Copies `from` to `to`, holding each chunk back by `lag` milliseconds.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    lag: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let lag = lag.load(Ordering::Acquire);
        if lag > 0 {
            tokio::time::sleep(Duration::from_millis(lag)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl TcpProxy {
    /// Starts proxying `127.0.0.1:<ephemeral>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lag = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (up2, generation2, stop2) = (up.clone(), generation.clone(), stop.clone());
        let (accepted2, lag2, open2) = (accepted.clone(), lag.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop2.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                accepted2.lock().unwrap().push(Instant::now());
                // Read under the lock `cut` takes, so a connection accepted as it cuts is
                // either refused or dropped with the others, never kept.
                let cut = {
                    let generation = generation2.lock().await;
                    if !up2.load(Ordering::Acquire) {
                        drop(inbound);
                        continue;
                    }
                    generation.clone()
                };
                let lag = lag2.clone();
                let open = Open::new(&open2);
                tokio::spawn(async move {
                    let _open = open;
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_target, to_target) = outbound.into_split();
                    let no_lag = Arc::new(AtomicU64::new(0));
                    tokio::select! {
                        () = cut.cancelled() => {}
                        () = pump(from_client, to_target, no_lag) => {}
                        () = pump(from_target, to_client, lag) => {}
                    }
                });
            }
        });
        Self { addr, up, generation, stop, accepted, lag, open }
    }

    /// How many connections it carries now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Holds back everything the target sends by `lag` from now on (a slow network, a
    /// broker slow to confirm).
    pub fn delay_answers(&self, lag: Duration) {
        self.lag.store(u64::try_from(lag.as_millis()).unwrap(), Ordering::Release);
    }

    /// When each connection was accepted, oldest first.
    pub fn connections(&self) -> Vec<Instant> {
        self.accepted.lock().unwrap().clone()
    }

    /// Drops every connection and refuses new ones until [`TcpProxy::restore`].
    pub async fn cut(&self) {
        let mut generation = self.generation.lock().await;
        self.up.store(false, Ordering::Release);
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::Release);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(generation) = self.generation.try_lock() {
            generation.cancel();
        }
    }
}
