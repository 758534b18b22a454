//! `social-post recompute-counters`: sets every post's `likes_count` and
//! `comments_count` from the likes and comments themselves, as counted by the
//! engagement service. Exact while likes keep coming: they are counted as of a moment a
//! margin in the past and the events up to it are fenced out
//! (`social_events::idempotency`, docs/events.md).

use std::time::Duration;

use social_proto::engagement::v1::{
    CountPostEngagementRequest, engagement_service_client::EngagementServiceClient,
};

use crate::{Config, store::Store};

/// Recounts every post's counters as of `margin` ago; returns how many posts it
/// recounted, or an error naming the batches it could not (it goes on past them).
pub async fn recompute_counters(config: &Config, margin: Duration) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db).with_caches(&config.cache)?;
    store.init().await?;
    // Counting a viral post takes longer than an RPC's usual deadline.
    let peer = config.engagement_service.with_timeout(Duration::from_secs(60));
    let engagement = move |ids: Vec<bson::oid::ObjectId>, as_of| {
        let peer = peer.clone();
        async move {
            let request = CountPostEngagementRequest {
                post_ids: ids.iter().map(|id| id.to_hex()).collect(),
                as_of: Some(social_kit::recount::as_of_timestamp(as_of)),
            };
            let counted =
                social_kit::call!(peer, EngagementServiceClient.count_post_engagement(request));
            let counts = counted.map_err(|s| peer.error(s))?.counts;
            Ok(counts.into_iter().map(|c| (c.post_id, c.likes_count, c.comments_count)).collect())
        }
    };
    social_kit::recount::recompute("post counters", margin, &store, engagement).await
}
