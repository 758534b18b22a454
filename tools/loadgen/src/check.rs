//! `check`: after a run, waits until what the run caused has landed (the counters of
//! the posts and users it touched, the notifications it should have made), reports how
//! long that took, and checks that every counter equals the documents it counts.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use social_proto::{
    engagement::v1::CountPostEngagementRequest,
    graph::v1::CountFollowsRequest,
    notification::v1::{ListNotificationsRequest, NotificationType},
    post::v1::BatchGetPostsRequest,
    user::v1::BatchGetUsersRequest,
};
use social_testkit::authed;
use tonic::Status;

use crate::{
    load::{Expected, Report},
    procs::round,
    seed::{Seeded, login},
    target::{Clients, Target, as_service},
};

#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
    /// The report of the run to check.
    #[arg(long, default_value = ".run/loadgen-report.json")]
    pub report: PathBuf,
    /// What `seed` wrote.
    #[arg(long, default_value = ".run/loadgen-seed.json")]
    pub seeded: PathBuf,
    /// How long to wait for everything to land, in seconds.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
    /// The credential of internal RPCs (the recounts `check` compares with); the
    /// DEVELOPMENT-ONLY one by default, as `scripts/up` runs with it.
    #[arg(long, env = "SERVICE_TOKEN", default_value = social_kit::auth::DEV_SERVICE_TOKEN, hide_env_values = true)]
    pub service_token: String,
}

/// What `check` found.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    /// Whether everything landed and every counter equals its documents.
    pub settled: bool,
    /// Seconds from the start of the check until it settled.
    pub waited_secs: f64,
    /// Seconds from the end of the run until it settled (or the check gave up).
    pub since_run_end_secs: f64,
    pub posts: usize,
    pub users: usize,
    pub notifications: usize,
    /// What still differed at the end, if it did not settle.
    pub mismatches: Vec<String>,
}

pub async fn check(args: &CheckArgs) -> anyhow::Result<Checked> {
    let report = Report::read(&args.report)?;
    let seeded = Seeded::read(&args.seeded)?;
    let clients = Clients::connect(&args.target).await?;
    let started = Instant::now();
    // Recipients' tokens, to read their notifications.
    let mut tokens: HashMap<usize, String> = HashMap::new();
    for e in &report.ledger.expected {
        if let std::collections::hash_map::Entry::Vacant(v) = tokens.entry(e.recipient) {
            let user = seeded.users.get(e.recipient).ok_or_else(|| {
                anyhow::anyhow!("the report names user {} the seed file does not have", e.recipient)
            })?;
            let (_, token) = login(&clients, &user.username)
                .await
                .map_err(|s| anyhow::anyhow!("logging {} in: {s}", user.username))?;
            v.insert(token);
        }
    }
    let posts: Vec<String> = report.ledger.posts.iter().cloned().collect();
    let users: Vec<String> = report.ledger.users.iter().cloned().collect();
    let deadline = started + Duration::from_secs(args.wait_secs);
    let mut mismatches;
    loop {
        mismatches = Vec::new();
        counters(&clients, &args.service_token, &posts, &users, &mut mismatches)
            .await
            .map_err(|s| anyhow::anyhow!("reading counters: {s}"))?;
        notifications(&clients, &tokens, &report.ledger.expected, &mut mismatches)
            .await
            .map_err(|s| anyhow::anyhow!("reading notifications: {s}"))?;
        if mismatches.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Ok(Checked {
        settled: mismatches.is_empty(),
        waited_secs: round(started.elapsed().as_secs_f64()),
        since_run_end_secs: round(now_ms.saturating_sub(report.ended_at_ms) as f64 / 1000.0),
        posts: posts.len(),
        users: users.len(),
        notifications: report.ledger.expected.len(),
        mismatches,
    })
}

/// Compares the counters on posts and users with the recounts of their documents.
async fn counters(
    clients: &Clients,
    service_token: &str,
    posts: &[String],
    users: &[String],
    out: &mut Vec<String>,
) -> Result<(), Status> {
    for chunk in posts.chunks(100) {
        let shown = clients
            .post()
            .batch_get_posts(as_service(
                BatchGetPostsRequest { ids: chunk.to_vec() },
                service_token,
            ))
            .await?
            .into_inner()
            .posts;
        let counted: BTreeMap<String, (i64, i64)> = clients
            .engagement()
            .count_post_engagement(as_service(
                CountPostEngagementRequest { post_ids: chunk.to_vec(), as_of: None },
                service_token,
            ))
            .await?
            .into_inner()
            .counts
            .into_iter()
            .map(|c| (c.post_id, (c.likes_count, c.comments_count)))
            .collect();
        let shown = shown.into_iter().map(|p| (p.id, (p.likes_count, p.comments_count)));
        compare("post", ["likes", "comments"], shown, &counted, out);
    }
    for chunk in users.chunks(100) {
        let shown = clients
            .user()
            .batch_get_users(as_service(
                BatchGetUsersRequest { ids: chunk.to_vec() },
                service_token,
            ))
            .await?
            .into_inner()
            .users;
        let counted: BTreeMap<String, (i64, i64)> = clients
            .graph()
            .count_follows(as_service(
                CountFollowsRequest { user_ids: chunk.to_vec(), as_of: None },
                service_token,
            ))
            .await?
            .into_inner()
            .counts
            .into_iter()
            .map(|c| (c.user_id, (c.followers_count, c.following_count)))
            .collect();
        let shown = shown.into_iter().map(|u| (u.id, (u.followers_count, u.following_count)));
        compare("user", ["followers", "following"], shown, &counted, out);
    }
    Ok(())
}

/// Notes each of `shown` (an id and its two counters, named `names`) whose counters
/// differ from `counted`'s recount.
fn compare(
    what: &str,
    names: [&str; 2],
    shown: impl IntoIterator<Item = (String, (i64, i64))>,
    counted: &BTreeMap<String, (i64, i64)>,
    out: &mut Vec<String>,
) {
    let [a_name, b_name] = names;
    for (id, (a, b)) in shown {
        let (counted_a, counted_b) = counted.get(&id).copied().unwrap_or_default();
        if (a, b) != (counted_a, counted_b) {
            out.push(format!(
                "{what} {id}: {a} {a_name} and {b} {b_name} shown, {counted_a} and {counted_b} stored"
            ));
        }
    }
}

/// Finds each expected notification among its recipient's newest 2,000 of its type (a
/// popular account's follow notifications from the seed can be older than its newest
/// thousand of all types; the run's follow of an account it already followed expects
/// the seed's notification).
async fn notifications(
    clients: &Clients,
    tokens: &HashMap<usize, String>,
    expected: &[Expected],
    out: &mut Vec<String>,
) -> Result<(), Status> {
    let mut by_recipient: BTreeMap<(usize, &str), Vec<&Expected>> = BTreeMap::new();
    for e in expected {
        by_recipient.entry((e.recipient, e.kind.as_str())).or_default().push(e);
    }
    for ((recipient, name), wanted) in by_recipient {
        let Some(token) = tokens.get(&recipient) else {
            continue;
        };
        let Some(kind) = NotificationType::from_str_name(name) else {
            out.push(format!("user #{recipient}: expected a notification of unknown type {name}"));
            continue;
        };
        let mut have = Vec::new();
        let mut page_token = String::new();
        for _ in 0..20 {
            let page = clients
                .notification()
                .list_notifications(authed(
                    ListNotificationsRequest {
                        page_size: 100,
                        page_token: page_token.clone(),
                        types: vec![kind.into()],
                        ..Default::default()
                    },
                    token,
                ))
                .await?
                .into_inner();
            have.extend(page.notifications);
            page_token = page.next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
        for e in wanted {
            let found = have.iter().any(|n| {
                n.r#type == i32::from(kind)
                    && n.source_user_id == e.actor
                    && (e.post.is_none() || n.post_id == e.post)
            });
            if !found {
                out.push(format!(
                    "user #{recipient}: no {} notification from {} {}",
                    e.kind,
                    e.actor,
                    e.post.as_deref().unwrap_or("")
                ));
            }
        }
    }
    Ok(())
}
