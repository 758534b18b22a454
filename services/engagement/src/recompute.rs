//! `social-engagement recompute-counters`: sets every comment's `likes_count` from its
//! likes, counted as of a moment a margin in the past with the events up to it fenced
//! out, so that it is exact while likes keep coming (`social_events::idempotency`,
//! docs/events.md). Post counters are the post service's
//! (`social-post recompute-counters`).

use std::time::Duration;

use bson::oid::ObjectId;

use crate::{Config, store::Store};

/// Recounts every comment's likes as of `margin` ago; returns how many it recounted, or
/// an error naming the batches it could not (it goes on past them).
pub async fn recompute_counters(config: &Config, margin: Duration) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db);
    store.init().await?;
    let as_of = social_kit::recount::as_of_ms(margin);
    social_kit::recount::walk(
        "comment counters",
        |after, limit| {
            let store = store.clone();
            async move { Ok(store.comment_ids_after(after, limit).await?) }
        },
        |ids| {
            let store = store.clone();
            async move { recount(&store, &ids, as_of).await }
        },
    )
    .await
}

async fn recount(store: &Store, ids: &[ObjectId], as_of: i64) -> anyhow::Result<u64> {
    let mut recounted = 0;
    for id in ids {
        let likes = store.count_likes(*id, as_of).await?;
        if store.recount_comment_likes(*id, as_of, likes).await? {
            recounted += 1;
        }
    }
    Ok(recounted)
}
