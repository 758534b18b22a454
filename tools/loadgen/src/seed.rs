//! `seed`: users, a follow graph shaped like a real one, and posts with media, created
//! through the API of a running system; rerunning it with the same settings creates
//! what is missing and changes nothing else.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use social_proto::{
    common::v1::Media,
    graph::v1::FollowRequest,
    post::v1::{CreatePostRequest, ListUserPostsRequest},
    user::v1::{LoginRequest, RegisterRequest},
};
use tonic::{Code, Status};

use social_testkit::authed;

use crate::target::{Clients, Target};

/// The password of every seeded account. DEVELOPMENT ONLY: these are load-test accounts.
pub const PASSWORD: &str = "loadgen-DEVELOPMENT-only-password";

#[derive(clap::Args, Clone, Debug)]
pub struct SeedArgs {
    #[command(flatten)]
    pub target: Target,
    /// How many users.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// How many accounts each user follows on average (each follows between half and
    /// one and a half times this).
    #[arg(long, default_value_t = 20)]
    pub follows: usize,
    /// The exponent of the power law of followers: whom to follow is drawn by rank with
    /// probability proportional to 1/rank^zipf, so user 0 has the most followers, a few
    /// accounts very many, most a handful.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Posts per user (with media: images, videos, gifs; mentions and links).
    #[arg(long, default_value_t = 5)]
    pub posts: usize,
    /// Usernames are `<prefix><n>`.
    #[arg(long, default_value = "lg")]
    pub prefix: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seed of the random graph (the same seed makes the same graph).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write what was seeded (read by `run` and `check`).
    #[arg(long, default_value = ".run/loadgen-seed.json")]
    pub out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// What `seed` made: the users by rank (user 0 has the most followers), with their
/// posts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seeded {
    pub prefix: String,
    pub users: Vec<SeededUser>,
    pub follows: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeededUser {
    pub id: String,
    pub username: String,
    pub posts: Vec<String>,
}

impl Seeded {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading {} (run `social-loadgen seed` first)", path.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

pub fn bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64).with_message(what.to_owned());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Retries what a busy service refuses for now (`RESOURCE_EXHAUSTED`: the password
/// hasher is full; `UNAVAILABLE`).
fn busy(status: &Status) -> bool {
    matches!(status.code(), Code::ResourceExhausted | Code::Unavailable)
}

fn patience() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(20)
        .with_jitter()
}

/// Logs `username` in: its id and an access token.
pub async fn login(clients: &Clients, username: &str) -> Result<(String, String), Status> {
    let attempt = || async {
        let r = clients
            .user()
            .login(LoginRequest {
                username_or_email: username.to_owned(),
                password: PASSWORD.to_owned(),
                device: "loadgen".into(),
            })
            .await?
            .into_inner();
        Ok((r.user.map(|u| u.id).unwrap_or_default(), r.access_token))
    };
    attempt.retry(patience()).when(busy).await
}

/// Registers `username`, or logs it in if it exists.
async fn account(clients: &Clients, username: String) -> anyhow::Result<(String, String)> {
    let register = || async {
        clients
            .user()
            .register(RegisterRequest {
                username: username.clone(),
                email: format!("{username}@loadgen.example"),
                password: PASSWORD.to_owned(),
                full_name: format!("Load {username}"),
                device: "loadgen".into(),
            })
            .await
    };
    match register.retry(patience()).when(busy).await {
        Ok(r) => {
            let r = r.into_inner();
            Ok((r.user.map(|u| u.id).unwrap_or_default(), r.access_token))
        }
        Err(s) if s.code() == Code::AlreadyExists => login(clients, &username)
            .await
            .with_context(|| format!("logging {username} in (seeded with another password?)")),
        Err(s) => Err(anyhow::anyhow!("registering {username}: {s}")),
    }
}

/// The follow graph: for each user, the ranks it follows.
pub fn graph(
    users: usize,
    follows: usize,
    zipf: f64,
    seed: u64,
) -> anyhow::Result<Vec<Vec<usize>>> {
    let mut rng = StdRng::seed_from_u64(seed);
    if users < 2 {
        return Ok(vec![Vec::new(); users]);
    }
    let by_rank = Zipf::new(users as f64, zipf).context("--zipf must be > 0")?;
    let mut out = Vec::with_capacity(users);
    for me in 0..users {
        let low = (follows / 2).max(1);
        let high = (follows + follows / 2).max(low);
        let want = rng.random_range(low..=high).min(users - 1);
        let mut chosen = HashSet::with_capacity(want);
        // Popular accounts are drawn again and again: give up after a while rather than
        // loop for the last few of a small graph.
        for _ in 0..want * 20 {
            if chosen.len() == want {
                break;
            }
            let rank = (by_rank.sample(&mut rng) as usize).clamp(1, users) - 1;
            if rank != me {
                chosen.insert(rank);
            }
        }
        let mut chosen: Vec<usize> = chosen.into_iter().collect();
        chosen.sort_unstable();
        out.push(chosen);
    }
    Ok(out)
}

/// The media of post `k` (cycling through none, an image, a video, a gif, two images).
pub fn media(tag: &str, k: usize) -> Vec<Media> {
    let image = |n: usize| Media {
        r#type: "image".into(),
        url: format!("https://cdn.example.com/{tag}/{k}-{n}.jpg"),
        width: 1080,
        height: 1350,
        ..Default::default()
    };
    match k % 5 {
        0 => Vec::new(),
        1 => vec![image(0)],
        2 => vec![Media {
            r#type: "video".into(),
            url: format!("https://cdn.example.com/{tag}/{k}.mp4"),
            thumbnail_url: format!("https://cdn.example.com/{tag}/{k}.jpg"),
            width: 1920,
            height: 1080,
            duration: Some(12.5),
        }],
        3 => vec![Media {
            r#type: "gif".into(),
            url: format!("https://cdn.example.com/{tag}/{k}.gif"),
            width: 480,
            height: 270,
            duration: Some(2.0),
            ..Default::default()
        }],
        _ => vec![image(0), image(1)],
    }
}

pub async fn seed(args: &SeedArgs) -> anyhow::Result<Seeded> {
    let clients = Clients::connect(&args.target).await?;
    let n = args.users;
    let concurrency = args.concurrency.max(1);

    // 1. Accounts.
    let bar = bar(n, "users", args.quiet);
    let accounts: Vec<(String, String)> = futures::stream::iter(0..n)
        .map(|i| {
            let (clients, bar) = (clients.clone(), bar.clone());
            let username = format!("{}{i}", args.prefix);
            async move {
                let account = account(&clients, username).await;
                bar.inc(1);
                account
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    bar.finish();
    let ids: Arc<Vec<String>> = Arc::new(accounts.iter().map(|(id, _)| id.clone()).collect());

    // 2. The follow graph (following an account already followed changes nothing).
    let graph = graph(n, args.follows, args.zipf, args.seed)?;
    let edges: Vec<(usize, usize)> = graph
        .iter()
        .enumerate()
        .flat_map(|(me, them)| them.iter().map(move |&t| (me, t)))
        .collect();
    let bar = self::bar(edges.len(), "follows", args.quiet);
    futures::stream::iter(edges)
        .map(|(me, them)| {
            let (clients, bar, ids) = (clients.clone(), bar.clone(), ids.clone());
            let token = accounts[me].1.clone();
            async move {
                let follow = || async {
                    clients
                        .graph()
                        .follow(authed(FollowRequest { followee_id: ids[them].clone() }, &token))
                        .await
                };
                let done = follow.retry(patience()).when(busy).await;
                bar.inc(1);
                done.map(|_| ()).map_err(|s| anyhow::anyhow!("follow {me} → {them}: {s}"))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    bar.finish();

    // 3. Posts: each user's missing ones.
    let bar = self::bar(n * args.posts, "posts", args.quiet);
    let usernames: Vec<String> = (0..n).map(|i| format!("{}{i}", args.prefix)).collect();
    let posts: Vec<Vec<String>> = futures::stream::iter(0..n)
        .map(|i| {
            let (clients, bar) = (clients.clone(), bar.clone());
            let (id, token) = accounts[i].clone();
            let friend = graph[i].first().map(|&f| usernames[f].clone());
            let me = usernames[i].clone();
            let wanted = args.posts;
            async move {
                let mut have: Vec<String> = clients
                    .post()
                    .list_user_posts(authed(
                        ListUserPostsRequest {
                            user_id: id,
                            page_size: wanted.clamp(1, 100) as i32,
                            page_token: String::new(),
                        },
                        &token,
                    ))
                    .await
                    .map_err(|s| anyhow::anyhow!("listing {me}'s posts: {s}"))?
                    .into_inner()
                    .posts
                    .into_iter()
                    .map(|p| p.id)
                    .collect();
                bar.inc(have.len().min(wanted) as u64);
                for k in have.len()..wanted {
                    let mention = friend.as_deref().map(|f| format!(" with @{f}")).unwrap_or_default();
                    let post = clients
                        .post()
                        .create_post(authed(
                            CreatePostRequest {
                                content: format!(
                                    "Post {k} by {me}{mention}: https://example.com/{me}/{k} #loadgen"
                                ),
                                media: media(&me, k),
                            },
                            &token,
                        ))
                        .await
                        .map_err(|s| anyhow::anyhow!("a post of {me}: {s}"))?;
                    have.push(post.into_inner().id);
                    bar.inc(1);
                }
                Ok::<_, anyhow::Error>(have)
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    bar.finish();

    let seeded = Seeded {
        prefix: args.prefix.clone(),
        follows: graph.iter().map(Vec::len).sum(),
        users: accounts
            .into_iter()
            .zip(usernames)
            .zip(posts)
            .map(|(((id, _), username), posts)| SeededUser { id, username, posts })
            .collect(),
    };
    if let Some(dir) = args.out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string(&seeded)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(seeded)
}
