//! `social-post recompute-counters`: sets every post's `likes_count` and
//! `comments_count` from the likes and comments themselves, as counted by the
//! engagement service. Counts move while it runs; for exact numbers run it while the
//! post service's consumer is drained (or run it twice).

use social_kit::{Error, validate};
use social_proto::engagement::v1::{
    CountPostEngagementRequest, engagement_service_client::EngagementServiceClient,
};

use crate::{Config, store::Store};

/// Recomputes the counters of every post; returns how many posts it visited.
pub async fn recompute_counters(config: &Config) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db);
    let peer = &config.engagement_service;
    let mut engagement = EngagementServiceClient::new(peer.channel());
    let (mut after, mut visited) = (None, 0_u64);
    loop {
        let ids = store.ids_after(after, validate::MAX_BATCH as i64).await?;
        let Some(last) = ids.last().copied() else {
            return Ok(visited);
        };
        let request = peer.request(CountPostEngagementRequest {
            post_ids: ids.iter().map(|id| id.to_hex()).collect(),
        });
        let counts = peer
            .call(engagement.count_post_engagement(request))
            .await
            .map_err(|s| peer.error(s))?;
        for c in counts.counts {
            let post = bson::oid::ObjectId::parse_str(&c.post_id).map_err(Error::internal)?;
            store
                .set_counts(post, c.likes_count, c.comments_count)
                .await?;
        }
        visited += ids.len() as u64;
        tracing::info!(visited, "recomputed post counters");
        after = Some(last);
    }
}
