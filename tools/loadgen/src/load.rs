//! `run` and `sweep`: open-loop load at a fixed rate against a running system.
//!
//! Open loop, as wrk2 does: request `i` is due at `start + i / rate` whatever happened
//! to the others, and its latency is measured from when it was due, not from when it
//! could be sent, so a stalled system is charged for every request it held up
//! (no coordinated omission).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, distr::weighted::WeightedIndex, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use social_proto::{
    engagement::v1::{CreateCommentRequest, LikePostRequest},
    graph::v1::FollowRequest,
    notification::v1::{
        GetUnreadCountRequest, ListNotificationsRequest, StreamNotificationsRequest,
    },
    post::v1::{CreatePostRequest, GetPostRequest, ListHomeFeedRequest, ListUserPostsRequest},
    user::v1::GetUserRequest,
};
use social_testkit::authed;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic_health::pb::HealthCheckRequest;

use crate::{
    procs,
    seed::{Seeded, bar, login, media},
    target::{Clients, SERVICES, Target},
};

/// A workload: which operations, in which proportions.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mix {
    /// DeathStarBench's social network mix: 60% home timeline reads, 30% user timeline
    /// reads, 10% posts with mentions, links and media.
    Dsb,
    /// A fuller social mix: home 30%, user timelines 15%, GetPost 10%, posts 5%, likes
    /// 15%, comments with mentions 7%, follows 3%, notification lists 10%, unread counts
    /// 5% (and --streams open notification streams).
    Social,
    /// Health checks, spread over the five services: the cheapest request each serves.
    Health,
    /// GetPost of seeded posts.
    GetPost,
    /// GetUser of seeded users.
    GetUser,
}

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    HomeTimeline,
    UserTimeline,
    ComposePost,
    GetPost,
    LikePost,
    Comment,
    Follow,
    ListNotifications,
    UnreadCount,
    GetUser,
    Health,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::HomeTimeline => "home_timeline",
            Op::UserTimeline => "user_timeline",
            Op::ComposePost => "compose_post",
            Op::GetPost => "get_post",
            Op::LikePost => "like_post",
            Op::Comment => "comment",
            Op::Follow => "follow",
            Op::ListNotifications => "list_notifications",
            Op::UnreadCount => "unread_count",
            Op::GetUser => "get_user",
            Op::Health => "health_check",
        }
    }

    /// The service (index in [`SERVICES`]) the request goes to.
    fn service(self) -> usize {
        match self {
            Op::GetUser => 0,
            Op::HomeTimeline | Op::UserTimeline | Op::ComposePost | Op::GetPost => 1,
            Op::Follow => 2,
            Op::LikePost | Op::Comment => 3,
            Op::ListNotifications | Op::UnreadCount => 4,
            Op::Health => usize::MAX,
        }
    }
}

impl Mix {
    fn weights(self) -> &'static [(Op, u32)] {
        match self {
            Mix::Dsb => &[(Op::HomeTimeline, 60), (Op::UserTimeline, 30), (Op::ComposePost, 10)],
            Mix::Social => &[
                (Op::HomeTimeline, 30),
                (Op::UserTimeline, 15),
                (Op::GetPost, 10),
                (Op::ComposePost, 5),
                (Op::LikePost, 15),
                (Op::Comment, 7),
                (Op::Follow, 3),
                (Op::ListNotifications, 10),
                (Op::UnreadCount, 5),
            ],
            Mix::Health => &[(Op::Health, 1)],
            Mix::GetPost => &[(Op::GetPost, 1)],
            Mix::GetUser => &[(Op::GetUser, 1)],
        }
    }
}

/// What `run` and `sweep` share.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: Target,
    /// The workload.
    #[arg(long, value_enum, default_value_t = Mix::Dsb)]
    pub mix: Mix,
    /// How many seeded users act (logged in before the load starts), spread over the
    /// popularity ranks.
    #[arg(long, default_value_t = 100)]
    pub active: usize,
    /// Notification streams held open during the load, by active users.
    #[arg(long, default_value_t = 0)]
    pub streams: usize,
    /// What `seed` wrote.
    #[arg(long, default_value = ".run/loadgen-seed.json")]
    pub seeded: PathBuf,
    /// The most requests in flight; beyond, the next due request waits (and is charged
    /// for the wait).
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Requests per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Where to write the JSON report (read by `check`).
    #[arg(long, default_value = ".run/loadgen-report.json")]
    pub report: PathBuf,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// The first rate (requests per second).
    #[arg(long, default_value_t = 25.0)]
    pub start: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.25)]
    pub factor: f64,
    /// The highest rate tried.
    #[arg(long, default_value_t = 20_000.0)]
    pub max: f64,
    /// Seconds per step.
    #[arg(long, default_value_t = 20)]
    pub step_secs: u64,
    /// The bound on the p99 latency of all requests, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub p99_ms: f64,
    /// Where to write the JSON report of every step.
    #[arg(long, default_value = ".run/loadgen-sweep.json")]
    pub report: PathBuf,
}

/// The seeded system, with the active users logged in.
pub struct World {
    clients: Clients,
    seeded: Seeded,
    /// (user index, access token, when obtained) of the active users.
    actors: Vec<(usize, String)>,
    logged_in: Instant,
    by_rank: Zipf<f64>,
    /// Posts created during the load, which later requests may like and comment on.
    new_posts: Mutex<Vec<(usize, String)>>,
}

impl World {
    /// Reads the seed file, connects, and logs the active users in.
    pub async fn prepare(args: &LoadArgs) -> anyhow::Result<Arc<Self>> {
        let seeded = Seeded::read(&args.seeded)?;
        let n = seeded.users.len();
        anyhow::ensure!(n >= 2, "the seed file has fewer than two users");
        let clients = Clients::connect(&args.target).await?;
        let active = args.active.clamp(1, n);
        let picked: Vec<usize> = (0..active).map(|k| k * n / active).collect();
        let actors = log_in(&clients, &seeded, &picked, args.quiet).await?;
        Ok(Arc::new(Self {
            clients,
            by_rank: Zipf::new(n as f64, 1.1).context("a rank distribution")?,
            seeded,
            actors,
            logged_in: Instant::now(),
            new_posts: Mutex::default(),
        }))
    }

    /// Logs the actors in again if their tokens are older than 10 minutes (access
    /// tokens live 15 by default).
    pub async fn refreshed(self: Arc<Self>, quiet: bool) -> anyhow::Result<Arc<Self>> {
        if self.logged_in.elapsed() < Duration::from_secs(600) {
            return Ok(self);
        }
        let picked: Vec<usize> = self.actors.iter().map(|(u, _)| *u).collect();
        let actors = log_in(&self.clients, &self.seeded, &picked, quiet).await?;
        let by_rank = self.by_rank;
        let new_posts =
            std::mem::take(&mut *self.new_posts.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        Ok(Arc::new(Self {
            clients: self.clients.clone(),
            seeded: self.seeded.clone(),
            actors,
            logged_in: Instant::now(),
            by_rank,
            new_posts: Mutex::new(new_posts),
        }))
    }

    fn user_by_rank(&self, rng: &mut StdRng) -> usize {
        (self.by_rank.sample(rng) as usize).clamp(1, self.seeded.users.len()) - 1
    }

    /// A post, its author's popularity drawn by rank (popular authors' posts get most
    /// of the likes and comments), or one created during the load.
    fn post(&self, rng: &mut StdRng) -> Option<(usize, String)> {
        if rng.random_ratio(1, 4)
            && let Ok(new) = self.new_posts.lock()
            && !new.is_empty()
        {
            return Some(new[rng.random_range(0..new.len())].clone());
        }
        for _ in 0..8 {
            let author = self.user_by_rank(rng);
            let posts = &self.seeded.users[author].posts;
            if !posts.is_empty() {
                return Some((author, posts[rng.random_range(0..posts.len())].clone()));
            }
        }
        None
    }

    fn job(&self, op: Op, rng: &mut StdRng, i: u64) -> Job {
        let actor = rng.random_range(0..self.actors.len());
        match op {
            Op::HomeTimeline => Job::Home { actor },
            Op::UserTimeline => Job::UserTimeline { actor, user: self.user_by_rank(rng) },
            Op::ComposePost => {
                Job::Compose { actor, mention: self.user_by_rank(rng), k: i as usize }
            }
            Op::GetPost => match self.post(rng) {
                Some((_, post)) => Job::GetPost { actor, post },
                None => Job::Health { service: 1 },
            },
            Op::LikePost => match self.post(rng) {
                Some(post) => Job::Like { actor, post },
                None => Job::Health { service: 3 },
            },
            Op::Comment => match self.post(rng) {
                Some(post) => Job::Comment { actor, post, mention: self.user_by_rank(rng) },
                None => Job::Health { service: 3 },
            },
            Op::Follow => Job::Follow { actor, whom: self.user_by_rank(rng) },
            Op::ListNotifications => Job::Notifications { actor },
            Op::UnreadCount => Job::Unread { actor },
            Op::GetUser => Job::GetUser { actor, user: self.user_by_rank(rng) },
            Op::Health => Job::Health { service: (i % 5) as usize },
        }
    }

    fn user_id(&self, user: usize) -> String {
        self.seeded.users[user].id.clone()
    }

    fn username(&self, user: usize) -> &str {
        &self.seeded.users[user].username
    }

    /// Sends `job`; what it did, for [`Ledger`].
    async fn exec(&self, job: Job, ledger: &Mutex<Ledger>) -> Result<(), Status> {
        let token = |actor: usize| self.actors[actor].1.as_str();
        let me = |actor: usize| self.actors[actor].0;
        match job {
            Job::Home { actor } => {
                self.clients
                    .post()
                    .list_home_feed(authed(
                        ListHomeFeedRequest { page_size: 20, page_token: String::new() },
                        token(actor),
                    ))
                    .await?;
            }
            Job::UserTimeline { actor, user } => {
                self.clients
                    .post()
                    .list_user_posts(authed(
                        ListUserPostsRequest {
                            user_id: self.user_id(user),
                            page_size: 20,
                            page_token: String::new(),
                        },
                        token(actor),
                    ))
                    .await?;
            }
            Job::Compose { actor, mention, k } => {
                let author = me(actor);
                let post = self
                    .clients
                    .post()
                    .create_post(authed(
                        CreatePostRequest {
                            content: format!(
                                "Load {k}: look @{} https://example.com/load/{k} #loadgen",
                                self.username(mention)
                            ),
                            media: media("load", k),
                        },
                        token(actor),
                    ))
                    .await?
                    .into_inner();
                if mention != author {
                    lock(ledger).notify(mention, "MENTION", &self.user_id(author), Some(&post.id));
                }
                if let Ok(mut new) = self.new_posts.lock()
                    && new.len() < 10_000
                {
                    new.push((author, post.id));
                }
            }
            Job::GetPost { actor, post } => {
                self.clients
                    .post()
                    .get_post(authed(GetPostRequest { id: post }, token(actor)))
                    .await?;
            }
            Job::Like { actor, post: (author, post) } => {
                self.clients
                    .engagement()
                    .like_post(authed(LikePostRequest { post_id: post.clone() }, token(actor)))
                    .await?;
                let mut ledger = lock(ledger);
                ledger.posts.insert(post.clone());
                let liker = me(actor);
                if liker != author {
                    ledger.notify(author, "POST_LIKE", &self.user_id(liker), Some(&post));
                }
            }
            Job::Comment { actor, post: (author, post), mention } => {
                self.clients
                    .engagement()
                    .create_comment(authed(
                        CreateCommentRequest {
                            post_id: post.clone(),
                            content: format!("Agreed, @{} should see this", self.username(mention)),
                            media: Vec::new(),
                        },
                        token(actor),
                    ))
                    .await?;
                let mut ledger = lock(ledger);
                ledger.posts.insert(post.clone());
                let commenter = me(actor);
                let id = self.user_id(commenter);
                if commenter != author {
                    ledger.notify(author, "POST_COMMENT", &id, Some(&post));
                }
                if mention != commenter {
                    ledger.notify(mention, "MENTION", &id, Some(&post));
                }
            }
            Job::Follow { actor, whom } => {
                let follower = me(actor);
                if follower == whom {
                    return Ok(()); // one cannot follow oneself: counted as a no-op
                }
                self.clients
                    .graph()
                    .follow(authed(FollowRequest { followee_id: self.user_id(whom) }, token(actor)))
                    .await?;
                let mut ledger = lock(ledger);
                ledger.users.insert(self.user_id(whom));
                ledger.users.insert(self.user_id(follower));
                ledger.notify(whom, "FOLLOW", &self.user_id(follower), None);
            }
            Job::Notifications { actor } => {
                self.clients
                    .notification()
                    .list_notifications(authed(
                        ListNotificationsRequest { page_size: 20, ..Default::default() },
                        token(actor),
                    ))
                    .await?;
            }
            Job::Unread { actor } => {
                self.clients
                    .notification()
                    .get_unread_count(authed(GetUnreadCountRequest {}, token(actor)))
                    .await?;
            }
            Job::GetUser { actor, user } => {
                self.clients
                    .user()
                    .get_user(authed(GetUserRequest { id: self.user_id(user) }, token(actor)))
                    .await?;
            }
            Job::Health { service } => {
                self.clients
                    .health(service)
                    .check(HealthCheckRequest { service: String::new() })
                    .await?;
            }
        }
        Ok(())
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn log_in(
    clients: &Clients,
    seeded: &Seeded,
    picked: &[usize],
    quiet: bool,
) -> anyhow::Result<Vec<(usize, String)>> {
    let bar = bar(picked.len(), "log in", quiet);
    let out = futures::stream::iter(picked.iter().copied())
        .map(|u| {
            let (clients, bar) = (clients.clone(), bar.clone());
            let username = seeded.users[u].username.clone();
            async move {
                let (_, token) = login(&clients, &username)
                    .await
                    .map_err(|s| anyhow::anyhow!("logging {username} in: {s}"))?;
                bar.inc(1);
                Ok::<_, anyhow::Error>((u, token))
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    bar.finish_and_clear();
    Ok(out)
}

/// One request, its parameters chosen (actors are indexes into the active users; users
/// are seeded users by rank).
enum Job {
    Home { actor: usize },
    UserTimeline { actor: usize, user: usize },
    Compose { actor: usize, mention: usize, k: usize },
    GetPost { actor: usize, post: String },
    Like { actor: usize, post: (usize, String) },
    Comment { actor: usize, post: (usize, String), mention: usize },
    Follow { actor: usize, whom: usize },
    Notifications { actor: usize },
    Unread { actor: usize },
    GetUser { actor: usize, user: usize },
    Health { service: usize },
}

/// What a run changed, for `check`: the posts whose counters it moved, the users whose
/// follow counts it moved, and notifications it should have caused (the first
/// [`Ledger::MAX_EXPECTED`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub posts: HashSet<String>,
    pub users: HashSet<String>,
    pub expected: Vec<Expected>,
}

/// A notification that should exist: `recipient` (a seeded user's rank) told that
/// `actor` did `kind` (to `post`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Expected {
    pub recipient: usize,
    pub kind: String,
    pub actor: String,
    pub post: Option<String>,
}

impl Ledger {
    pub const MAX_EXPECTED: usize = 300;

    fn notify(&mut self, recipient: usize, kind: &str, actor: &str, post: Option<&str>) {
        if self.expected.len() < Self::MAX_EXPECTED {
            self.expected.push(Expected {
                recipient,
                kind: kind.to_owned(),
                actor: actor.to_owned(),
                post: post.map(str::to_owned),
            });
        }
    }
}

/// Latency percentiles of one operation, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub errors: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>, errors: u64) -> Self {
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        Self {
            count: h.len(),
            errors,
            mean_ms: (h.mean() / 10.0).round() / 100.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Live notification streams during a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamsReport {
    pub opened: u64,
    pub messages: u64,
    pub failed: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub mix: Mix,
    pub rate: f64,
    pub duration_secs: f64,
    pub sent: u64,
    pub achieved_rate: f64,
    pub errors: u64,
    /// Errors by operation and gRPC code.
    pub errors_by_code: BTreeMap<String, BTreeMap<String, u64>>,
    /// Latency from when each request was due (open loop), all requests.
    pub all: Percentiles,
    pub ops: BTreeMap<String, Percentiles>,
    pub requests_by_service: BTreeMap<String, u64>,
    pub streams: StreamsReport,
    /// CPU and memory of each process of the system on this machine.
    #[serde(default, skip_deserializing)]
    pub processes: BTreeMap<String, procs::Cost>,
    /// Milliseconds since the Unix epoch.
    pub ended_at_ms: u64,
    pub ledger: Ledger,
}

impl Report {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading {} (made by `social-loadgen run`)", path.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        write_json(path, self)
    }

    /// A human summary.
    pub fn print(&self) {
        println!(
            "{:?} mix at {:.0}/s for {:.0} s: {} requests, {:.1}/s achieved, {} errors",
            self.mix, self.rate, self.duration_secs, self.sent, self.achieved_rate, self.errors
        );
        println!(
            "  {:<20} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (name, p) in self.ops.iter().chain([(&"all".to_owned(), &self.all)]) {
            println!(
                "  {:<20} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name, p.count, p.errors, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
        for (op, codes) in &self.errors_by_code {
            for (code, n) in codes {
                println!("  error: {op} {code} × {n}");
            }
        }
        if self.streams.opened > 0 {
            println!(
                "  streams: {} opened, {} messages, {} failed",
                self.streams.opened, self.streams.messages, self.streams.failed
            );
        }
        if !self.processes.is_empty() {
            println!(
                "  {:<30} {:>10} {:>10} {:>9} {:>12}",
                "process", "RSS idle", "RSS max", "CPU s", "CPU µs/req"
            );
            for (name, c) in &self.processes {
                println!(
                    "  {:<30} {:>7.1} MiB {:>6.1} MiB {:>9.2} {:>12.1}",
                    name, c.rss_idle_mib, c.rss_max_mib, c.cpu_secs, c.cpu_us_per_request
                );
            }
        }
    }
}

pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Default)]
struct Stats {
    latency: HashMap<Op, Histogram<u64>>,
    all: Option<Histogram<u64>>,
    errors: HashMap<Op, BTreeMap<String, u64>>,
    by_service: [u64; 5],
}

#[allow(clippy::expect_used)] // constant bounds
fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

impl Stats {
    fn record(&mut self, op: Op, service: usize, latency: Duration, result: &Result<(), Status>) {
        let us = (latency.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.latency.entry(op).or_insert_with(histogram).record(us);
        let _ = self.all.get_or_insert_with(histogram).record(us);
        if let Some(n) = self.by_service.get_mut(service) {
            *n += 1;
        }
        if let Err(status) = result {
            *self
                .errors
                .entry(op)
                .or_default()
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
        }
    }

    fn p99_ms(&self) -> f64 {
        self.all.as_ref().map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0)
    }

    fn error_count(&self) -> u64 {
        self.errors.values().flat_map(BTreeMap::values).sum()
    }
}

/// Runs `args.mix` at `rate` for `duration` against `world`.
pub async fn drive(
    world: &Arc<World>,
    args: &LoadArgs,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Report> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be more than 0");
    let weights = args.mix.weights();
    let choose =
        WeightedIndex::new(weights.iter().map(|(_, w)| *w)).context("the mix's weights")?;
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let watch = Arc::new(Mutex::new(procs::Watch::start()));
    let mut rng = StdRng::seed_from_u64(args.seed ^ rate.to_bits());

    // The open streams, until the end of the load.
    let streams = Arc::new(StreamCounters::default());
    let end_streams = tokio_util::sync::CancellationToken::new();
    for s in 0..args.streams {
        let (world, counters, end) = (world.clone(), streams.clone(), end_streams.clone());
        tokio::spawn(
            async move { hold_stream(&world, s % world.actors.len(), &counters, &end).await },
        );
    }

    // The live progress line.
    let progress = bar(total as usize, &format!("{:?} {rate:.0}/s", args.mix), args.quiet);
    let plain = !args.quiet && !std::io::stderr().is_terminal();
    let ticker = {
        let (stats, watch, progress, in_flight) =
            (stats.clone(), watch.clone(), progress.clone(), in_flight.clone());
        let cap = args.max_in_flight.max(1);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                every.tick().await;
                n += 1;
                if let Ok(mut w) = watch.lock() {
                    w.tick();
                }
                let (errors, p99) =
                    stats.lock().map(|s| (s.error_count(), s.p99_ms())).unwrap_or_default();
                let line = format!(
                    "in flight {}, errors {errors}, p99 {p99:.1} ms",
                    cap - in_flight.available_permits()
                );
                if plain && n.is_multiple_of(5) {
                    eprintln!("  {}s: {} done, {line}", n, progress.position());
                }
                progress.set_message(line);
            }
        })
    };

    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let op = weights[choose.sample(&mut rng)].0;
        let job = world.job(op, &mut rng, i);
        let service = match &job {
            Job::Health { service } => *service,
            _ => op.service(),
        };
        let (world, stats, ledger, progress) =
            (world.clone(), stats.clone(), ledger.clone(), progress.clone());
        tasks.spawn(async move {
            let result = world.exec(job, &ledger).await;
            let latency = due.elapsed();
            if let Ok(mut s) = stats.lock() {
                s.record(op, service, latency, &result);
            }
            progress.inc(1);
            drop(permit);
        });
        // Reap finished tasks as we go (the set would otherwise hold every one).
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    end_streams.cancel();
    ticker.abort();
    progress.finish_and_clear();

    // (The ticker may not have let go of its clones yet: take the contents.)
    let watch = std::mem::take(&mut *watch.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let processes = watch.finish(total);
    let stats = std::mem::take(&mut *stats.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let ledger = lock(&ledger).clone();
    let errors_by_code: BTreeMap<String, BTreeMap<String, u64>> =
        stats.errors.iter().map(|(op, codes)| (op.name().to_owned(), codes.clone())).collect();
    let ops = stats
        .latency
        .iter()
        .map(|(op, h)| {
            let errors = stats.errors.get(op).map_or(0, |c| c.values().sum());
            (op.name().to_owned(), Percentiles::of(h, errors))
        })
        .collect();
    let errors = stats.error_count();
    Ok(Report {
        mix: args.mix,
        rate,
        duration_secs: duration.as_secs_f64(),
        sent: total,
        achieved_rate: (total as f64 / elapsed * 10.0).round() / 10.0,
        errors,
        errors_by_code,
        all: stats.all.as_ref().map(|h| Percentiles::of(h, errors)).unwrap_or_default(),
        ops,
        requests_by_service: SERVICES
            .iter()
            .zip(stats.by_service)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| ((*s).to_owned(), n))
            .collect(),
        streams: StreamsReport {
            opened: streams.opened.load(Ordering::Relaxed),
            messages: streams.messages.load(Ordering::Relaxed),
            failed: streams.failed.load(Ordering::Relaxed),
        },
        processes,
        ended_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ledger,
    })
}

#[derive(Default)]
struct StreamCounters {
    opened: AtomicU64,
    messages: AtomicU64,
    failed: AtomicU64,
}

/// Holds a notification stream of active user `actor` open until `end`, reopening it
/// if the service ends it.
async fn hold_stream(
    world: &World,
    actor: usize,
    counters: &StreamCounters,
    end: &tokio_util::sync::CancellationToken,
) {
    while !end.is_cancelled() {
        let mut client = world.clients.notification();
        let open = client.stream_notifications(authed(
            StreamNotificationsRequest { include_groups: true },
            &world.actors[actor].1,
        ));
        let stream = tokio::select! {
            () = end.cancelled() => return,
            s = open => s,
        };
        match stream {
            Ok(stream) => {
                counters.opened.fetch_add(1, Ordering::Relaxed);
                let mut stream = stream.into_inner();
                loop {
                    tokio::select! {
                        () = end.cancelled() => return,
                        m = stream.next() => match m {
                            Some(Ok(_)) => { counters.messages.fetch_add(1, Ordering::Relaxed); }
                            Some(Err(_)) => { counters.failed.fetch_add(1, Ordering::Relaxed); break; }
                            None => break,
                        },
                    }
                }
            }
            Err(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            () = end.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

pub async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    let world = World::prepare(&args.load).await?;
    let report =
        drive(&world, &args.load, args.rate, Duration::from_secs(args.duration_secs)).await?;
    report.write(&args.report)?;
    Ok(report)
}

/// One step of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub rate: f64,
    pub passed: bool,
    pub report: Report,
}

/// What a sweep found.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    pub mix: Mix,
    pub p99_bound_ms: f64,
    /// The highest rate whose p99 stayed under the bound with no errors.
    pub max_rate: Option<f64>,
    pub steps: Vec<Step>,
}

pub async fn sweep(args: &SweepArgs) -> anyhow::Result<Sweep> {
    anyhow::ensure!(args.factor > 1.0, "--factor must be more than 1");
    let mut world = World::prepare(&args.load).await?;
    let mut rate = args.start;
    let mut out =
        Sweep { mix: args.load.mix, p99_bound_ms: args.p99_ms, max_rate: None, steps: Vec::new() };
    while rate <= args.max {
        world = world.refreshed(args.load.quiet).await?;
        let report = drive(&world, &args.load, rate, Duration::from_secs(args.step_secs)).await?;
        let passed = report.errors == 0 && report.all.p99_ms <= args.p99_ms;
        println!(
            "{:>9.1}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {:>5}  {}",
            rate,
            report.all.p50_ms,
            report.all.p99_ms,
            report.errors,
            if passed { "ok" } else { "over the bound" }
        );
        out.steps.push(Step { rate, passed, report });
        if !passed {
            break;
        }
        out.max_rate = Some(rate);
        rate = (rate * args.factor).round();
        // Let the queues drain before the next step.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    write_json(&args.report, &out)?;
    Ok(out)
}
