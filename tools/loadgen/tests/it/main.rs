//! The load generator against the in-process stack: seed (twice: the second changes
//! nothing), a short run of the social mix with open streams, the check of what it
//! caused, and a two-step sweep.

use std::{path::PathBuf, time::Duration};

use social_loadgen::{
    check::{CheckArgs, check},
    load::{LoadArgs, Mix, RunArgs, SweepArgs, run, sweep},
    seed::{SeedArgs, seed},
    target::Target,
};
use social_testkit::{Stack, unique_name};

fn target(stack: &Stack) -> Target {
    let url = |r: &social_testkit::Running| format!("http://{}", r.addr);
    Target {
        user: url(&stack.user),
        post: url(&stack.post),
        graph: url(&stack.graph),
        engagement: url(&stack.engagement),
        notification: url(&stack.notification),
        connections: 2,
        timeout_secs: 20,
    }
}

#[tokio::test]
async fn seed_run_check_and_sweep_against_the_in_process_stack() {
    let stack = Stack::start().await;
    let dir: PathBuf = std::env::temp_dir().join(unique_name("loadgen"));
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let seed_args = SeedArgs {
        target: target(&stack),
        users: 12,
        follows: 4,
        zipf: 1.1,
        posts: 2,
        prefix: format!("lg{:x}_", nanos % 0xff_ffff),
        concurrency: 8,
        seed: 1,
        out: dir.join("seed.json"),
        quiet: true,
    };
    let seeded = seed(&seed_args).await.unwrap();
    assert_eq!(seeded.users.len(), 12);
    assert!(seeded.users.iter().all(|u| u.posts.len() == 2));
    assert!(seeded.follows >= 12, "each user follows at least one other");
    // A rerun finds everything there and creates nothing.
    let again = seed(&seed_args).await.unwrap();
    for (a, b) in seeded.users.iter().zip(&again.users) {
        assert_eq!(a.id, b.id);
        let (mut pa, mut pb) = (a.posts.clone(), b.posts.clone());
        pa.sort();
        pb.sort();
        assert_eq!(pa, pb, "a rerun made posts again");
    }

    let load = LoadArgs {
        target: target(&stack),
        mix: Mix::Social,
        active: 6,
        streams: 2,
        seeded: dir.join("seed.json"),
        max_in_flight: 256,
        seed: 3,
        quiet: true,
    };
    let report = run(&RunArgs {
        load: load.clone(),
        rate: 40.0,
        duration_secs: 3,
        report: dir.join("report.json"),
    })
    .await
    .unwrap();
    assert_eq!(report.sent, 120);
    assert_eq!(report.all.count, 120, "every request measured");
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_code);
    for op in ["home_timeline", "like_post", "list_notifications"] {
        assert!(report.ops.contains_key(op), "{op} never ran: {:?}", report.ops.keys());
    }
    assert!(report.streams.opened >= 2, "{:?}", report.streams);
    assert!(!report.ledger.posts.is_empty() && !report.ledger.expected.is_empty());
    assert!(dir.join("report.json").exists());

    let checked = check(&CheckArgs {
        target: target(&stack),
        report: dir.join("report.json"),
        seeded: dir.join("seed.json"),
        wait_secs: 60,
        service_token: social_kit::auth::DEV_SERVICE_TOKEN.to_owned(),
    })
    .await
    .unwrap();
    assert!(checked.settled, "{:?}", checked.mismatches);

    let swept = sweep(&SweepArgs {
        load: LoadArgs { mix: Mix::Dsb, streams: 0, ..load },
        start: 10.0,
        factor: 2.0,
        max: 20.0,
        step_secs: 1,
        p99_ms: 60_000.0,
        report: dir.join("sweep.json"),
    })
    .await
    .unwrap();
    assert_eq!(
        swept.max_rate,
        Some(20.0),
        "{:?}",
        swept.steps.iter().map(|s| (s.rate, s.passed)).collect::<Vec<_>>()
    );
    assert_eq!(swept.steps.len(), 2);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
