//! Micro-benchmarks (`social-loadgen bench <name>`, run by `scripts/bench`) on this
//! machine, against the services started in-process (as in the tests)
//! and the MongoDB at `MONGODB_URI`:
//!
//! ```text
//! scripts/bench feed     # ListHomeFeed latency for readers following 10..5000 accounts,
//!                        # from their home timelines and merged in MongoDB
//! scripts/bench fanout   # time from CreatePost until the post is in every follower's
//!                        # home timeline, authors with 100 to 10,000 followers, and one
//!                        # above the fan-out limit
//! scripts/bench login    # one Login (Argon2id verify) end to end
//! scripts/bench deletion # deleting an account with 10,000 posts, 50,000 likes given and
//!                        # 5,000 follows (BENCH_POSTS, BENCH_LIKES, BENCH_FOLLOWS): the
//!                        # mean time of the first and last ten batches of each step, and
//!                        # GetPost's rate and latency meanwhile
//! scripts/bench storm    # GetUser latency alone and during 64 clients logging in at once,
//!                        # and how many logins per second the user service sustains
//! scripts/bench notifications  # list, unread-only list and unread count, 100,000 notifications
//! scripts/bench events   # likes under load: RPC rate and latency, then how long until the
//!                        # counters and notifications they cause have all landed
//! scripts/bench streams  # memory of 1,000 open notification streams
//! scripts/bench groups   # a page of notification groups for a reader whose one post has
//!                        # 100,000 likes and who has 1,000 other groups, against a page
//!                        # of plain notifications; a like landing in that group
//! scripts/bench cache    # GetPost from one client for 10 s, the post service's cache off
//!                        # and on (warm): latency and rate
//! scripts/bench shed     # 3,000 GetPost at once against the post service (its release
//!                        # binary, a process of its own) whose MongoDB answers 200 ms
//!                        # late: refusals, the admitted calls' latency and the process's
//!                        # peak memory, with the default bound on requests in flight
//!                        # and with none
//! scripts/bench gateway  # GET /v1/posts/{id} through the gateway against GetPost over
//!                        # gRPC, the feed with authors against without, the gateway's
//!                        # memory idle and under load (the system as separate processes)
//! ```
//!
//! Memory figures are of this one process, which holds all five services, their
//! clients and the load itself.
//!
//! Build with `--release`. Seeding writes the `followers` and `posts` documents straight
//! into a fresh database (registering 5,000 users through Argon2 would measure the
//! hasher, not the feed); everything measured goes through gRPC.

#![allow(clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bson::{DateTime, doc, oid::ObjectId};
use hdrhistogram::Histogram;
use social_kit::peers;
use social_proto::{
    engagement::v1::LikePostRequest,
    notification::v1::{
        GetUnreadCountRequest, GetUnreadGroupCountRequest, ListNotificationGroupsRequest,
        ListNotificationsRequest, StreamNotificationsRequest,
    },
    post::v1::{BatchGetPostsRequest, CreatePostRequest, ListHomeFeedRequest},
    user::v1::{LoginRequest, RegisterRequest},
};
use social_testkit::{Stack, authed, mongodb_uri, token_for};

pub(crate) const SAMPLES: u64 = 50;

/// The micro-benchmarks.
pub const NAMES: &[&str] = &[
    "feed",
    "fanout",
    "feed-hidden",
    "login",
    "storm",
    "deletion",
    "notifications",
    "events",
    "streams",
    "gateway",
    "groups",
    "shed",
    "cache",
];

/// The micro-benchmark `what`.
pub async fn run(what: &str) -> anyhow::Result<()> {
    match what {
        "feed" => crate::timelines::feed().await,
        "fanout" => crate::timelines::fanout().await,
        "feed-hidden" => feed_hidden().await,
        "login" => login().await,
        "storm" => storm().await,
        "deletion" => deletion().await,
        "notifications" => notifications().await,
        "events" => events().await,
        "streams" => streams().await,
        "gateway" => gateway().await,
        "groups" => groups().await,
        "shed" => shed().await,
        "cache" => cache().await,
        _ => anyhow::bail!("no benchmark {what:?}: one of {}", NAMES.join(", ")),
    }
}

pub(crate) fn report(label: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{label:<28} n={:<4} p50={:>8.2} ms  p95={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    );
}

/// A page of 20 of the home feed of the reader holding `token`, after `page_token`.
pub(crate) fn feed_page(token: &str, page_token: String) -> tonic::Request<ListHomeFeedRequest> {
    authed(ListHomeFeedRequest { page_size: 20, page_token }, token)
}

/// Runs `call`, recording in `h` how long it took.
pub(crate) async fn timed<T, E>(
    h: &mut Histogram<u64>,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    let started = Instant::now();
    let answer = call.await?;
    h.record(started.elapsed().as_micros() as u64)?;
    Ok(answer)
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report_memory(when: &str) {
    let (rss, peak) = memory();
    println!(
        "memory {when}: rss {rss:.1} MiB, peak {peak:.1} MiB (all five services in this process)"
    );
}

/// The stack's database (seeded directly by some benches, dropped by all at the end).
pub(crate) async fn database(stack: &Stack) -> anyhow::Result<mongodb::Database> {
    Ok(mongodb::Client::with_uri_str(mongodb_uri()).await?.database(&stack.database))
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Four posts by each of `authors`, one every 17 s back from `now` (ms), stored straight
/// into `posts`; how many.
pub(crate) async fn seed_posts(
    db: &mongodb::Database,
    authors: &[ObjectId],
    now: i64,
) -> anyhow::Result<usize> {
    let mut docs = Vec::new();
    for (i, author) in authors.iter().enumerate() {
        for j in 0..4 {
            let t = DateTime::from_millis(now - ((i * 4 + j) as i64) * 17_000);
            docs.push(doc! {
                "_id": ObjectId::new(), "user_id": author, "content": format!("post {j} by {i}"),
                "media": [], "likes_count": 0_i64, "comments_count": 0_i64, "state": "active",
                "created_at": t, "updated_at": t, "sort_key": social_kit::paging::sort_key(t),
            });
        }
    }
    for chunk in docs.chunks(5000) {
        db.collection("posts").insert_many(chunk.to_vec()).await?;
    }
    Ok(docs.len())
}

/// ListHomeFeed page 1 for a reader following 100 accounts who blocks or mutes 1,000
/// others (50 of them followees), against one who hides nobody.
async fn feed_hidden() -> anyhow::Result<()> {
    let stack = Stack::start().await;
    let db = database(&stack).await?;
    let mut posts = stack.posts().await;
    let authors: Vec<ObjectId> = (0..2000).map(|_| ObjectId::new()).collect();
    let now = DateTime::now().timestamp_millis();
    let key = |i: usize| social_kit::paging::sort_key(DateTime::from_millis(now - i as i64 * 7));
    seed_posts(&db, &authors, now).await?;
    println!("ListHomeFeed page 1 of 20, a reader following 100, {SAMPLES} samples each:");
    let mut next = 0;
    for hides in ["nobody", "1000 blocked", "1000 muted"] {
        let reader = ObjectId::new();
        let follows: Vec<_> = (0..100)
            .map(|i| {
                next += 1;
                doc! { "_id": ObjectId::new(), "follower_id": reader, "followee_id": authors[i * 20],
                "created_at": DateTime::now(), "sort_key": key(next),
                "state": "active", "active_key": "active" }
            })
            .collect();
        db.collection("followers").insert_many(follows).await?;
        // 50 of the hidden are followees (the feed leaves them out), 950 others.
        let hidden: Vec<ObjectId> =
            (0..1000).map(|i| if i < 50 { authors[i * 40] } else { ObjectId::new() }).collect();
        let mut rows = |kind: &str| -> Vec<bson::Document> {
            hidden
                .iter()
                .map(|h| {
                    next += 1;
                    let (a, b) = if kind == "blocks" {
                        ("blocker_id", "blocked_id")
                    } else {
                        ("muter_id", "muted_id")
                    };
                    doc! { "_id": ObjectId::new(), a: reader, b: h, "notifications": true,
                    "created_at": DateTime::now(), "sort_key": key(next),
                    "state": "active", "active_key": "active" }
                })
                .collect()
        };
        match hides {
            "1000 blocked" => {
                db.collection("blocks").insert_many(rows("blocks")).await?;
            }
            "1000 muted" => {
                db.collection("mutes").insert_many(rows("mutes")).await?;
            }
            _ => {}
        }
        let token = token_for(reader);
        let mut first = histogram();
        for _ in 0..SAMPLES {
            let page = timed(&mut first, posts.list_home_feed(feed_page(&token, String::new())))
                .await?
                .into_inner();
            assert_eq!(page.posts.len(), 20);
        }
        report(&format!("hiding {hides}: page 1"), &first);
    }
    db.drop().await?;
    Ok(())
}

async fn login() -> anyhow::Result<()> {
    let stack = Stack::start().await;
    let mut users = stack.users().await;
    users
        .register(RegisterRequest {
            username: "bench".into(),
            email: "bench@example.com".into(),
            password: "correct horse battery".into(),
            full_name: String::new(),
            device: String::new(),
        })
        .await?;
    let mut ok = histogram();
    let mut unknown = histogram();
    for i in 0..SAMPLES {
        timed(
            &mut ok,
            users.login(LoginRequest {
                username_or_email: "bench".into(),
                password: "correct horse battery".into(),
                device: String::new(),
            }),
        )
        .await?;
        let started = Instant::now();
        let _ = users
            .login(LoginRequest {
                // A new name each time: failures for one name are throttled.
                username_or_email: format!("nobody{i}"),
                password: "correct horse battery".into(),
                device: String::new(),
            })
            .await;
        unknown.record(started.elapsed().as_micros() as u64)?;
    }
    report("login (right password)", &ok);
    report("login (unknown user)", &unknown);
    database(&stack).await?.drop().await?;
    Ok(())
}

/// GetUser latencies of one client calling for `how_long`.
async fn get_user_for(
    users: &social_proto::user::v1::user_service_client::UserServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    how_long: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = histogram();
    let mut users = users.clone();
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        timed(
            &mut latencies,
            users.get_user(social_proto::user::v1::GetUserRequest { id: id.into() }),
        )
        .await?;
    }
    Ok(latencies)
}

async fn storm() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const CLIENTS: usize = 64;
    const FOR: Duration = Duration::from_secs(15);
    let stack = Stack::start().await;
    let users = stack.users().await;
    let id = users
        .clone()
        .register(RegisterRequest {
            username: "bench".into(),
            email: "bench@example.com".into(),
            password: "correct horse battery".into(),
            full_name: String::new(),
            device: String::new(),
        })
        .await?
        .into_inner()
        .user
        .expect("a user")
        .id;
    let alone = get_user_for(&users, &id, FOR).await?;
    report("GetUser alone", &alone);
    report_memory("before the storm");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, failed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut logins = Vec::new();
    for _ in 0..CLIENTS {
        let (mut users, stop) = (users.clone(), stop.clone());
        let (ok, refused, failed) = (ok.clone(), refused.clone(), failed.clone());
        logins.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let attempt = users
                    .login(LoginRequest {
                        username_or_email: "bench".into(),
                        password: "correct horse battery".into(),
                        device: "storm".into(),
                    })
                    .await;
                match attempt {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    let during = get_user_for(&users, &id, FOR).await?;
    stop.store(true, Ordering::Relaxed);
    for login in logins {
        login.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    report("GetUser during the storm", &during);
    println!(
        "{CLIENTS} clients logging in for {secs:.0} s: {:.1} logins/s accepted, {:.1}/s refused at once (UNAVAILABLE), {} other errors",
        ok.load(Ordering::Relaxed) as f64 / secs,
        refused.load(Ordering::Relaxed) as f64 / secs,
        failed.load(Ordering::Relaxed),
    );
    println!(
        "p99 during / alone: {:.2}x",
        during.value_at_quantile(0.99) as f64 / alone.value_at_quantile(0.99).max(1) as f64
    );
    report_memory("after the storm");
    database(&stack).await?.drop().await?;
    Ok(())
}

/// The batches the services' long jobs report (`social_events::consumer::BATCHES`): the
/// step and how long each took (µs), in the order they were done.
#[derive(Clone, Default)]
struct Batches(Arc<std::sync::Mutex<Vec<(String, u64)>>>);

impl Batches {
    /// Collects the batches logged from now on in this process.
    fn install() -> Self {
        use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
        let batches = Self::default();
        let only =
            Targets::new().with_target(social_events::consumer::BATCHES, tracing::Level::DEBUG);
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::Layer::with_filter(batches.clone(), only))
            .try_init();
        batches
    }

    /// Per step: how many batches, and the mean time (ms) of its first and last ten.
    fn report(&self) {
        let all = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        let mut steps: Vec<&str> = Vec::new();
        for (step, _) in &all {
            if !steps.contains(&step.as_str()) {
                steps.push(step);
            }
        }
        for step in steps {
            let times: Vec<u64> = all.iter().filter(|(s, _)| s == step).map(|(_, t)| *t).collect();
            let mean =
                |part: &[u64]| part.iter().sum::<u64>() as f64 / part.len().max(1) as f64 / 1000.0;
            let ten = times.len().min(10);
            let (first, last) = (mean(&times[..ten]), mean(&times[times.len() - ten..]));
            println!(
                "  {step:<18} {:>4} batches: first ten {first:>7.1} ms, last ten {last:>7.1} ms each ({:.2}x)",
                times.len(),
                last / first.max(f64::MIN_POSITIVE)
            );
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Batches {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            step: Option<String>,
            micros: Option<u64>,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "step" {
                    self.step = Some(value.to_owned());
                }
            }
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "micros" {
                    self.micros = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (Some(step), Some(micros), Ok(mut all)) = (fields.step, fields.micros, self.0.lock())
        {
            all.push((step, micros));
        }
    }
}

/// A size from the environment, or `default`.
fn size(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn deletion() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let batches = Batches::install();
    let (posts_n, likes_n, follows_n) =
        (size("BENCH_POSTS", 10_000), size("BENCH_LIKES", 50_000), size("BENCH_FOLLOWS", 5_000));
    let stack = Stack::start().await;
    let db = database(&stack).await?;
    let (doomed, token) = stack.register("doomed").await;
    let doomed = ObjectId::parse_str(&doomed)?;
    let (other, _) = stack.register("other").await;
    let other = ObjectId::parse_str(&other)?;
    // Seeded straight into the owners' collections, as the services write them.
    let now = DateTime::now();
    let started_ms = now.timestamp_millis() - 60_000;
    let post = |author: ObjectId| {
        doc! {
            "_id": ObjectId::new(), "user_id": author, "content": "seeded", "media": [],
            "likes_count": 0_i64, "comments_count": 0_i64, "created_at": now,
            "sort_key": social_kit::paging::fresh_sort_key(), "updated_at": now,
            "state": "active", "recount_ms": 0_i64, "counter_version": 0_i64,
            "outbox_pending": 0,
        }
    };
    let own: Vec<_> = (0..posts_n).map(|_| post(doomed)).collect();
    let targets: Vec<_> = (0..likes_n).map(|_| post(other)).collect();
    let likes: Vec<_> = targets
        .iter()
        .map(|p| {
            let target = p.get_object_id("_id").expect("an id");
            doc! {
                "_id": ObjectId::new(), "user_id": doomed, "target_type": "post",
                "target_id": target, "post_id": target, "target_author_id": other,
                "created_at": now, "sort_key": social_kit::paging::fresh_sort_key(),
                "state": "active", "active_key": "active", "started_ms": started_ms,
                "outbox_pending": 0,
            }
        })
        .collect();
    let follows: Vec<_> = (0..follows_n)
        .map(|i| {
            let someone = ObjectId::new();
            let (follower, followee) =
                if i % 2 == 0 { (doomed, someone) } else { (someone, doomed) };
            doc! {
                "_id": ObjectId::new(), "follower_id": follower, "followee_id": followee,
                "created_at": now, "sort_key": social_kit::paging::fresh_sort_key(),
                "state": "active", "active_key": "active", "started_ms": started_ms,
                "outbox": [], "outbox_pending": 0,
            }
        })
        .collect();
    db.collection::<bson::Document>("posts").insert_many(own.into_iter().chain(targets)).await?;
    db.collection::<bson::Document>("likes").insert_many(likes).await?;
    db.collection::<bson::Document>("followers").insert_many(follows).await?;
    let probe = db
        .collection::<bson::Document>("posts")
        .find_one(doc! { "user_id": social_kit::mongo::equals_id(other) })
        .await?
        .expect("a post")
        .get_object_id("_id")?
        .to_hex();
    println!("an account with {posts_n} posts, {likes_n} likes given and {follows_n} follows:");
    let alone = get_post_for(&stack, &probe, Duration::from_secs(5)).await?;
    report("GetPost alone", &alone.0);

    let done = Arc::new(AtomicBool::new(false));
    let meanwhile = {
        let (done, stack_posts, probe) = (done.clone(), stack.posts().await, probe.clone());
        tokio::spawn(async move {
            let mut posts = stack_posts;
            let mut h = histogram();
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                posts
                    .get_post(social_proto::post::v1::GetPostRequest { id: probe.clone() })
                    .await?;
                h.record(t.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>((h, started.elapsed()))
        })
    };
    let started = Instant::now();
    stack
        .users()
        .await
        .delete_account(authed(
            social_proto::user::v1::DeleteAccountRequest {
                password: "correct horse battery".into(),
            },
            &token,
        ))
        .await?;
    let requested = started.elapsed();
    let users = db.collection::<bson::Document>("users");
    loop {
        let user = users.find_one(doc! { "_id": doomed }).await?;
        if user.is_some_and(|u| u.contains_key("deletion_finished_ms")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (during, span) = meanwhile.await??;
    println!(
        "DeleteAccount answered in {:.0} ms; every service cleared the account after {:.1} s",
        requested.as_secs_f64() * 1000.0,
        finished.as_secs_f64()
    );
    report("GetPost during the cascade", &during);
    println!("batches of the cascade, by step (100 items each, the last one fewer):");
    batches.report();
    println!(
        "GetPost rate: {:.0}/s alone, {:.0}/s during the cascade (one client)",
        alone.0.len() as f64 / alone.1.as_secs_f64(),
        during.len() as f64 / span.as_secs_f64()
    );
    report_memory("after the deletion");
    db.drop().await?;
    Ok(())
}

/// GetPost latencies of one client calling for `how_long`, and how long it ran.
async fn get_post_for(
    stack: &Stack,
    id: &str,
    how_long: Duration,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let mut posts = stack.posts().await;
    let mut h = histogram();
    let started = Instant::now();
    while started.elapsed() < how_long {
        let t = Instant::now();
        posts.get_post(social_proto::post::v1::GetPostRequest { id: id.into() }).await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    Ok((h, started.elapsed()))
}

async fn notifications() -> anyhow::Result<()> {
    let stack = Stack::start().await;
    let db = database(&stack).await?;
    let mut client = stack.notifications().await;
    let reader = ObjectId::new();
    let token = token_for(reader);
    // 100,000 notifications, one in ten unread, among 100,000 of other users.
    let now = DateTime::now().timestamp_millis();
    let seeded = Instant::now();
    for batch in 0..40 {
        let docs: Vec<_> = (0..5000)
            .map(|i| {
                let n = batch * 5000 + i;
                let t = DateTime::from_millis(now - n * 1000);
                let user = if n % 2 == 0 { reader } else { ObjectId::new() };
                doc! {
                    "_id": ObjectId::new(), "user_id": user, "type": "POST_LIKE",
                    "source_user_id": ObjectId::new(), "post_id": ObjectId::new(),
                    "is_read": n % 20 != 0, "created_at": t,
                    "sort_key": social_kit::paging::sort_key(t), "dedupe_key": format!("bench:{n}"),
                }
            })
            .collect();
        db.collection("notifications").insert_many(docs).await?;
    }
    println!(
        "seeded 200,000 notifications (100,000 for the reader, 10,000 of them unread) in {:?}",
        seeded.elapsed()
    );
    let (mut list, mut unread_list, mut count) = (histogram(), histogram(), histogram());
    for _ in 0..SAMPLES {
        let page = timed(
            &mut list,
            client.list_notifications(authed(
                ListNotificationsRequest { page_size: 20, ..Default::default() },
                &token,
            )),
        )
        .await?
        .into_inner();
        assert_eq!(page.notifications.len(), 20);
        timed(
            &mut unread_list,
            client.list_notifications(authed(
                ListNotificationsRequest { page_size: 20, unread_only: true, ..Default::default() },
                &token,
            )),
        )
        .await?;
        let n =
            timed(&mut count, client.get_unread_count(authed(GetUnreadCountRequest {}, &token)))
                .await?
                .into_inner();
        // 10,000 unread, read up to the count's cap.
        assert_eq!(n.count, 1_000);
    }
    report("ListNotifications page 1", &list);
    report("ListNotifications unread", &unread_list);
    report("GetUnreadCount (10,000 unread: reads 1,000)", &count);
    db.drop().await?;
    Ok(())
}

/// Grouped notifications: a reader whose one post has 100,000 likes (one group) and who
/// has 1,000 other groups (comments, one each). A page of groups against a page of plain
/// notifications, the unread group count, then real likes of that post landing in its
/// group (LikePost until the group's count shows it).
async fn groups() -> anyhow::Result<()> {
    const LIKES: i64 = 100_000;
    const OTHERS: i64 = 1_000;
    let stack = Stack::start().await;
    let db = database(&stack).await?;
    let mut client = stack.notifications().await;
    let (reader_id, reader) = stack.register("reader").await;
    let reader_oid = ObjectId::parse_str(&reader_id)?;
    let post = stack
        .posts()
        .await
        .create_post(authed(
            CreatePostRequest { content: "viral".into(), ..Default::default() },
            &reader,
        ))
        .await?
        .into_inner()
        .id;
    let post_oid = ObjectId::parse_str(&post)?;
    let now = DateTime::now().timestamp_millis();
    let window = now.div_euclid(86_400_000);
    let big_key = format!("POST_LIKE:{post}:{window}");
    let seeded = Instant::now();
    let note = |n: i64, key: &str, kind: &str, post: ObjectId| {
        let t = DateTime::from_millis(now - 1_000_000 + n);
        doc! {
            "_id": ObjectId::new(), "user_id": reader_oid, "type": kind,
            "source_user_id": ObjectId::new(), "post_id": post,
            "is_read": n % 10 != 0, "created_at": t,
            "sort_key": social_kit::paging::sort_key(t), "dedupe_key": format!("bench:{kind}:{n}"),
            "event_id": format!("bench-{n}"), "event_ms": t.timestamp_millis(), "group_key": key,
        }
    };
    for batch in 0..(LIKES / 5000) {
        let docs: Vec<_> =
            (0..5000).map(|i| note(batch * 5000 + i, &big_key, "POST_LIKE", post_oid)).collect();
        db.collection("notifications").insert_many(docs).await?;
    }
    let newest = note(LIKES - 1, &big_key, "POST_LIKE", post_oid);
    let group = |key: &str,
                 kind: &str,
                 post: ObjectId,
                 count: i64,
                 unread: i64,
                 latest: &bson::Document| {
        doc! {
            "_id": ObjectId::new(), "user_id": reader_oid, "group_key": key, "type": kind,
            "post_id": post, "count": count, "unread": unread,
            "actors": [latest.get_object_id("source_user_id").ok()],
            "latest_id": latest.get_object_id("_id").ok(), "latest_at": latest.get("created_at").cloned(),
            "sort_key": latest.get_i64("sort_key").ok(), "read_key": 0_i64,
            "head_version": 1_i64, "counter_version": 1_i64,
        }
    };
    let mut groups = vec![group(&big_key, "POST_LIKE", post_oid, LIKES, LIKES / 10, &newest)];
    let mut others = Vec::new();
    for n in 0..OTHERS {
        // Spread between the big group's likes, so that pages interleave them.
        let key = format!("single:bench:{n}");
        let one = note(n * (LIKES / OTHERS) + 7, &key, "POST_COMMENT", ObjectId::new());
        groups.push(group(
            &key,
            "POST_COMMENT",
            one.get_object_id("post_id")?,
            1,
            i64::from(n % 10 == 0),
            &one,
        ));
        others.push(one);
    }
    db.collection("notifications").insert_many(others).await?;
    db.collection("notification_groups").insert_many(groups).await?;
    println!(
        "seeded {LIKES} likes of one post (one group) and {OTHERS} other groups for the reader in {:?}",
        seeded.elapsed()
    );
    let (mut page1, mut page2, mut plain, mut unread) =
        (histogram(), histogram(), histogram(), histogram());
    for _ in 0..SAMPLES {
        let first = timed(
            &mut page1,
            client.list_notification_groups(authed(
                ListNotificationGroupsRequest { page_size: 20, ..Default::default() },
                &reader,
            )),
        )
        .await?
        .into_inner();
        assert_eq!(first.groups.len(), 20);
        assert_eq!(first.groups[0].notifications_count, LIKES);
        timed(
            &mut page2,
            client.list_notification_groups(authed(
                ListNotificationGroupsRequest {
                    page_size: 20,
                    page_token: first.next_page_token,
                    ..Default::default()
                },
                &reader,
            )),
        )
        .await?;
        let page = timed(
            &mut plain,
            client.list_notifications(authed(
                ListNotificationsRequest { page_size: 20, ..Default::default() },
                &reader,
            )),
        )
        .await?
        .into_inner();
        assert_eq!(page.notifications.len(), 20);
        let n = timed(
            &mut unread,
            client.get_unread_group_count(authed(GetUnreadGroupCountRequest {}, &reader)),
        )
        .await?
        .into_inner();
        assert_eq!(n.count, 1 + OTHERS / 10);
    }
    report("ListNotificationGroups p1", &page1);
    report("ListNotificationGroups p2", &page2);
    report("ListNotifications page 1", &plain);
    report("GetUnreadGroupCount", &unread);
    // Real likes landing in the 100,000-like group: LikePost until the count shows it.
    let mut landed = histogram();
    let mut engagement = stack.engagement().await;
    for i in 0..10 {
        let liker = token_for(ObjectId::new());
        let started = Instant::now();
        engagement.like_post(authed(LikePostRequest { post_id: post.clone() }, &liker)).await?;
        loop {
            let top = client
                .list_notification_groups(authed(
                    ListNotificationGroupsRequest { page_size: 1, ..Default::default() },
                    &reader,
                ))
                .await?
                .into_inner();
            if top.groups.first().map(|g| g.notifications_count) == Some(LIKES + i + 1) {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the like never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        landed.record(started.elapsed().as_micros() as u64)?;
    }
    report("like -> its group (100,001+)", &landed);
    db.drop().await?;
    Ok(())
}

/// Concurrent clients liking posts for a while, then the wait until every event they
/// caused has been applied: each post's `likes_count` and the author's unread count.
async fn events() -> anyhow::Result<()> {
    const CLIENTS: usize = 16;
    const POSTS: usize = 20;
    const LOAD: Duration = Duration::from_secs(20);
    let stack = Stack::start().await;
    let (author_id, author) = stack.register("author").await;
    let to_author =
        doc! { "user_id": social_kit::mongo::equals_id(ObjectId::parse_str(&author_id)?) };
    let mut posts = stack.posts().await;
    let mut ids = Vec::new();
    for i in 0..POSTS {
        let post = posts
            .create_post(authed(
                CreatePostRequest { content: format!("post {i}"), media: vec![] },
                &author,
            ))
            .await?
            .into_inner();
        ids.push(post.id);
    }
    let ids = Arc::new(ids);
    report_memory("before the load");
    println!("{CLIENTS} clients liking {POSTS} posts for {LOAD:?}, each like by a new user:");
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..CLIENTS {
        let (mut engagement, ids) = (stack.engagement().await, ids.clone());
        workers.spawn(async move {
            let mut h = histogram();
            let mut i = w;
            while started.elapsed() < LOAD {
                let request = authed(
                    LikePostRequest { post_id: ids[i % ids.len()].clone() },
                    &token_for(ObjectId::new()),
                );
                let t = Instant::now();
                engagement.like_post(request).await?;
                h.record(t.elapsed().as_micros() as u64)?;
                i += CLIENTS;
            }
            anyhow::Ok(h)
        });
    }
    let mut latency = histogram();
    while let Some(worker) = workers.join_next().await {
        latency.add(worker??)?;
    }
    let loaded = started.elapsed();
    let likes = latency.len();
    report("LikePost under load", &latency);
    println!("{likes} likes in {loaded:.1?}: {:.0} likes/s", likes as f64 / loaded.as_secs_f64());
    report_memory("after the load");

    // Poll until the counters and the notifications have caught up.
    let (mut counters_at, mut notified_at) = (None, None);
    let wait = Instant::now();
    while (counters_at.is_none() || notified_at.is_none())
        && wait.elapsed() < Duration::from_secs(600)
    {
        if counters_at.is_none() {
            let got = posts
                .batch_get_posts(BatchGetPostsRequest { ids: ids.to_vec() })
                .await?
                .into_inner();
            let counted: i64 = got.posts.iter().map(|p| p.likes_count).sum();
            if counted == likes as i64 {
                counters_at = Some(wait.elapsed());
            }
        }
        // Counted in the database: the unread count stops at 1,000.
        if notified_at.is_none() && stack.count("notifications", to_author.clone()).await == likes {
            notified_at = Some(wait.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let show =
        |d: Option<Duration>| d.map_or("not within 10 min".to_owned(), |d| format!("{d:.1?}"));
    println!("after the last like: likes_count settled in {}", show(counters_at));
    println!(
        "after the last like: the author's {likes} notifications stored in {}",
        show(notified_at)
    );
    if let Some(all) = counters_at.max(notified_at) {
        let total = loaded + all;
        println!(
            "events end to end: {likes} likes -> {} events applied in {total:.1?} ({:.0} events/s)",
            likes * 2,
            (likes * 2) as f64 / total.as_secs_f64()
        );
    }
    report_memory("at the end");
    database(&stack).await?.drop().await?;
    Ok(())
}

/// Memory of open notification streams: 1,000 users with one stream each, over ten
/// connections.
async fn streams() -> anyhow::Result<()> {
    const STREAMS: usize = 1000;
    const CONNECTIONS: usize = 10;
    let stack = Stack::start().await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(stack.notifications().await);
    }
    // Warm up the allocator and one stream of each connection before measuring.
    let mut open = Vec::with_capacity(STREAMS);
    for client in &mut clients {
        open.push(
            client
                .stream_notifications(authed(
                    StreamNotificationsRequest::default(),
                    &token_for(ObjectId::new()),
                ))
                .await?
                .into_inner(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = memory();
    let started = Instant::now();
    for i in CONNECTIONS..STREAMS {
        let client = &mut clients[i % CONNECTIONS];
        open.push(
            client
                .stream_notifications(authed(
                    StreamNotificationsRequest::default(),
                    &token_for(ObjectId::new()),
                ))
                .await?
                .into_inner(),
        );
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, peak) = memory();
    let added = STREAMS - CONNECTIONS;
    println!(
        "opened {added} streams in {opened:.1?}; rss {before:.1} -> {after:.1} MiB (peak {peak:.1}): {:.1} KiB per stream, server and client side together",
        (after - before) * 1024.0 / added as f64
    );
    drop(open);
    database(&stack).await?.drop().await?;
    Ok(())
}

/// GetPost from one client for 10 s with the post service's cache off, then on (#29).
async fn cache() -> anyhow::Result<()> {
    for (label, ttl) in [("cache off", 0), ("cache on, warm", 60)] {
        let mut settings = social_kit::cache::Settings::for_tests();
        settings.ttl = Duration::from_secs(ttl);
        let stack = Stack::start_with(social_testkit::StackOptions {
            post_cache: Some(settings),
            ..Default::default()
        })
        .await;
        let (_, token) = stack.register("author").await;
        let create =
            CreatePostRequest { content: "a post read over and over".into(), ..Default::default() };
        let mut posts = stack.posts().await;
        let post = posts.create_post(authed(create, &token)).await?.into_inner().id;
        get_post_for(&stack, &post, Duration::from_secs(1)).await?;
        let (h, took) = get_post_for(&stack, &post, Duration::from_secs(10)).await?;
        report(&format!("GetPost, {label}"), &h);
        println!("  {:.0} calls/s from one client", h.len() as f64 / took.as_secs_f64());
        database(&stack).await?.drop().await?;
    }
    Ok(())
}

/// Load shedding under a slow store (`scripts/bench shed`; #28): the post service's
/// release binary in a process of its own, its MongoDB behind a proxy that holds every
/// answer `BENCH_STORE_LAG_MS` (200) late, `BENCH_OFFERED` (3,000) GetPost calls sent at
/// once over 30 connections (30-s deadline); once with `MAX_REQUESTS_IN_FLIGHT` at its
/// default (1,000), once at 100,000 (no bound). Reports the calls refused at once
/// (`UNAVAILABLE`), the admitted ones' latency, and the process's peak RSS.
async fn shed() -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let offered = size("BENCH_OFFERED", 3000);
    let lag = Duration::from_millis(size("BENCH_STORE_LAG_MS", 200) as u64);
    let uri = mongodb_uri();
    let host = uri
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:27017")
        .to_owned();
    let target =
        host.to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("no address for {host}"))?;
    let proxy = social_testkit::TcpProxy::start(target).await;
    let database = format!("bench_shed_{}", std::process::id());
    let db = mongodb::Client::with_uri_str(&uri).await?.database(&database);
    let post_id = ObjectId::new();
    let now = DateTime::now();
    db.collection::<bson::Document>("posts")
        .insert_one(doc! {
            "_id": post_id, "user_id": ObjectId::new(), "content": "a post",
            "media": [], "mentions": [], "created_at": now, "updated_at": now,
            "sort_key": social_kit::paging::sort_key(now), "state": "active",
            "likes_count": 0_i64, "comments_count": 0_i64, "outbox": [], "outbox_pending": 0,
        })
        .await?;
    let binary = std::env::current_exe()?.with_file_name("social-post");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: cargo build --release --bins",
        binary.display()
    );
    for bound in [1_000_usize, 100_000] {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let mut child = std::process::Command::new(&binary)
            .env("POST_ADDR", format!("127.0.0.1:{port}"))
            .env("MONGODB_URI", format!("mongodb://{}/?directConnection=true", proxy.addr))
            .env("MONGODB_DATABASE", &database)
            .env("MAX_REQUESTS_IN_FLIGHT", bound.to_string())
            .env("DEVELOPMENT_KEYS", "true")
            .env("EVENTS_EXCHANGE", format!("{database}.events"))
            .env("EVENTS_QUEUE_PREFIX", &database)
            .env("EVENTS_QUEUE_TYPE", "classic")
            .env("EVENTS_EPHEMERAL", "true")
            .env("RUST_LOG", "error")
            .spawn()?;
        let pid = child.id().to_string();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        social_testkit::wait_serving(addr, "social.post.v1.PostService").await;
        let mut channels = Vec::new();
        for _ in 0..30 {
            channels.push(social_testkit::channel(addr).await);
        }
        // Warm: one answered call, then the store slows down.
        let get = |channel: tonic::transport::Channel| async move {
            let mut client =
                social_proto::post::v1::post_service_client::PostServiceClient::new(channel);
            let mut request = tonic::Request::new(social_proto::post::v1::GetPostRequest {
                id: post_id.to_hex(),
            });
            request.set_timeout(Duration::from_secs(30));
            let started = Instant::now();
            let answer = client.get_post(request).await;
            (answer.map(drop), started.elapsed())
        };
        get(channels[0].clone()).await.0?;
        let (idle_rss, _) = memory_of(&pid);
        proxy.delay_answers(lag);
        let peak = Arc::new(std::sync::Mutex::new(0.0_f64));
        let sampling = tokio::spawn({
            let (pid, peak) = (pid.clone(), peak.clone());
            async move {
                loop {
                    let (rss, _) = memory_of(&pid);
                    if let Ok(mut p) = peak.lock() {
                        *p = p.max(rss);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let started = Instant::now();
        let calls = (0..offered).map(|i| get(channels[i % channels.len()].clone()));
        let results = futures::future::join_all(calls).await;
        let took = started.elapsed();
        sampling.abort();
        proxy.delay_answers(Duration::ZERO);
        let (mut admitted, mut refused, mut other) = (histogram(), histogram(), 0_usize);
        for (answer, elapsed) in &results {
            match answer {
                Ok(()) => admitted.record(elapsed.as_micros() as u64)?,
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    refused.record(elapsed.as_micros() as u64)?
                }
                Err(_) => other += 1,
            }
        }
        let peak = peak.lock().map(|p| *p).unwrap_or_default();
        println!(
            "MAX_REQUESTS_IN_FLIGHT={bound}: {offered} GetPost at once, the store {} ms late: \
             {} answered, {} refused at once (UNAVAILABLE), {other} other errors, all done in \
             {:.1} s; RSS {idle_rss:.1} MiB before, {peak:.1} MiB at most",
            lag.as_millis(),
            admitted.len(),
            refused.len(),
            took.as_secs_f64(),
        );
        if !admitted.is_empty() {
            report("  answered", &admitted);
        }
        if !refused.is_empty() {
            report("  refused", &refused);
        }
        child.kill()?;
        child.wait()?;
    }
    db.drop().await?;
    Ok(())
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in MiB.
fn memory_of(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The gateway's cost, against the system started as separate processes (release build)
/// by `scripts/bench gateway`: `GATEWAY_URL`, `POST_SERVICE_URL`, `GATEWAY_PID`.
async fn gateway() -> anyhow::Result<()> {
    use social_proto::{
        post::v1::{GetPostRequest, post_service_client::PostServiceClient},
        user::v1::{BatchGetUsersRequest, user_service_client::UserServiceClient},
    };
    const SAMPLES: usize = 2000;
    const CLIENTS: usize = 32;
    const LOAD_FOR: Duration = Duration::from_secs(15);
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let base = env("GATEWAY_URL", "http://127.0.0.1:8080");
    let pid = env("GATEWAY_PID", "");
    let http = reqwest::Client::new();
    let mut posts =
        PostServiceClient::connect(env(peers::POST.url_var, peers::POST.local_url)).await?;
    let mut users =
        UserServiceClient::connect(env(peers::USER.url_var, peers::USER.local_url)).await?;
    let (idle_rss, _) = memory_of(&pid);

    // Twenty authors with five posts each, and a reader who follows them all.
    let sign_up = |name: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = serde_json::json!({
                "username": name, "email": format!("{name}@example.com"),
                "password": "correct horse battery",
            });
            let r: serde_json::Value = http
                .post(format!("{base}/v1/accounts"))
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let field = |p: &str| r.pointer(p).and_then(|v| v.as_str()).map(str::to_owned);
            anyhow::Ok((
                field("/user/id").unwrap_or_default(),
                field("/access_token").unwrap_or_default(),
            ))
        }
    };
    let (_, reader) = sign_up("reader".into()).await?;
    let mut post_id = String::new();
    for a in 0..20 {
        let (id, token) = sign_up(format!("author{a}")).await?;
        http.put(format!("{base}/v1/users/{id}/follow"))
            .bearer_auth(&reader)
            .send()
            .await?
            .error_for_status()?;
        for p in 0..5 {
            let body = serde_json::json!({"content": format!("post {p} by author {a}")});
            let r: serde_json::Value = http
                .post(format!("{base}/v1/posts"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            post_id = r["id"].as_str().unwrap_or_default().to_owned();
        }
    }

    // One client, alternating: the same post through the gateway, straight over gRPC,
    // and straight over gRPC with its author (the gateway's two calls).
    let (mut via_http, mut via_grpc, mut via_both) = (histogram(), histogram(), histogram());
    for i in 0..SAMPLES + 200 {
        let t = Instant::now();
        http.get(format!("{base}/v1/posts/{post_id}"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let http_us = t.elapsed().as_micros() as u64;
        let t = Instant::now();
        posts.get_post(GetPostRequest { id: post_id.clone() }).await?;
        let grpc_us = t.elapsed().as_micros() as u64;
        let t = Instant::now();
        let post = posts.get_post(GetPostRequest { id: post_id.clone() }).await?.into_inner();
        users.batch_get_users(BatchGetUsersRequest { ids: vec![post.user_id] }).await?;
        let both_us = t.elapsed().as_micros() as u64;
        if i >= 200 {
            via_http.record(http_us)?;
            via_grpc.record(grpc_us)?;
            via_both.record(both_us)?;
        }
    }
    report("GetPost over gRPC", &via_grpc);
    report("GetPost+BatchGetUsers gRPC", &via_both);
    report("GET /v1/posts/{id}", &via_http);
    let added = |over: &Histogram<u64>, q: f64| {
        (via_http.value_at_quantile(q) as f64 - over.value_at_quantile(q) as f64) / 1000.0
    };
    println!(
        "the gateway adds over GetPost alone: p50 {:.3} ms, p99 {:.3} ms; over the same two calls: p50 {:.3} ms, p99 {:.3} ms",
        added(&via_grpc, 0.5),
        added(&via_grpc, 0.99),
        added(&via_both, 0.5),
        added(&via_both, 0.99),
    );

    // The feed: a page of 20 posts by 20 authors, with the authors (the gateway: one
    // ListHomeFeed and one BatchGetUsers) and without (ListHomeFeed over gRPC).
    let (mut with_authors, mut without) = (histogram(), histogram());
    for i in 0..(SAMPLES / 4) + 50 {
        let t = Instant::now();
        let page: serde_json::Value = http
            .get(format!("{base}/v1/feed?page_size=20"))
            .bearer_auth(&reader)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let http_us = t.elapsed().as_micros() as u64;
        anyhow::ensure!(page["items"].as_array().map(Vec::len) == Some(20), "a page of 20: {page}");
        let t = Instant::now();
        posts
            .list_home_feed(authed(
                ListHomeFeedRequest { page_size: 20, page_token: String::new() },
                &reader,
            ))
            .await?;
        let grpc_us = t.elapsed().as_micros() as u64;
        if i >= 50 {
            with_authors.record(http_us)?;
            without.record(grpc_us)?;
        }
    }
    report("feed over gRPC, no authors", &without);
    report("GET /v1/feed with authors", &with_authors);

    // Under load: CLIENTS clients reading posts through the gateway.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, done) = (http.clone(), format!("{base}/v1/posts/{post_id}"), done.clone());
        clients.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0_u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let started = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while started.elapsed() < LOAD_FOR {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_rss = peak_rss.max(memory_of(&pid).0);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut loaded, mut errors) = (histogram(), 0);
    for c in clients {
        let (h, e) = c.await?;
        loaded.add(&h)?;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    report(&format!("GET /v1/posts/{{id}} x{CLIENTS}"), &loaded);
    println!(
        "{CLIENTS} clients for {secs:.0} s: {:.0} requests/s, {errors} errors",
        loaded.len() as f64 / secs
    );
    let (after_rss, hwm) = memory_of(&pid);
    println!(
        "gateway memory: idle {idle_rss:.1} MiB, under load up to {peak_rss:.1} MiB, after {after_rss:.1} MiB (peak {hwm:.1} MiB)"
    );
    Ok(())
}
