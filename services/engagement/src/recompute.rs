//! `social-engagement recompute-counters`: sets every comment's `likes_count` from its
//! likes. Counts move while it runs; for exact numbers run it while the consumer is
//! drained (or run it twice). Post counters are the post service's
//! (`social-post recompute-counters`).

use social_kit::validate;

use crate::{Config, store::Store};

/// Recomputes the like counter of every comment; returns how many it visited.
pub async fn recompute_counters(config: &Config) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db);
    store.init().await?;
    let (mut after, mut visited) = (None, 0_u64);
    loop {
        let ids = store
            .comment_ids_after(after, validate::MAX_BATCH as i64)
            .await?;
        let Some(last) = ids.last().copied() else {
            return Ok(visited);
        };
        for id in &ids {
            let likes = store.count_likes(*id).await?;
            store.set_comment_likes(*id, likes).await?;
        }
        visited += ids.len() as u64;
        tracing::info!(visited, "recomputed comment counters");
        after = Some(last);
    }
}
