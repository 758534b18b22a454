//! `social-user recompute-counters`: sets every user's `followers_count` and
//! `following_count` from the follows themselves, as counted by the social-graph
//! service, for the day counters drift (a bug, a restored backup). Exact while follows
//! keep coming: the follows are counted as of a moment a margin in the past and the
//! events up to it are fenced out (`social_events::idempotency`, docs/events.md).

use std::time::Duration;

use social_proto::graph::v1::{
    CountFollowsRequest, social_graph_service_client::SocialGraphServiceClient,
};

use crate::{Config, store::Store};

/// Recounts every user's follow counters as of `margin` ago; returns how many users it
/// recounted, or an error naming the batches it could not (it goes on past them).
pub async fn recompute_counters(config: &Config, margin: Duration) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    // Each recount forgets the cached profile.
    let store = Store::new(&db).with_caches(&config.cache)?;
    store.init().await?;
    // Counting a user with many followers takes longer than an RPC's usual deadline.
    let peer = config.graph_service.with_timeout(Duration::from_secs(60));
    let graph = move |ids: Vec<bson::oid::ObjectId>, as_of| {
        let peer = peer.clone();
        async move {
            let request = CountFollowsRequest {
                user_ids: ids.iter().map(|id| id.to_hex()).collect(),
                as_of: Some(social_kit::recount::as_of_timestamp(as_of)),
            };
            let counted = social_kit::call!(peer, SocialGraphServiceClient.count_follows(request));
            let counts = counted.map_err(|s| peer.error(s))?.counts;
            Ok(counts
                .into_iter()
                .map(|c| (c.user_id, c.followers_count, c.following_count))
                .collect())
        }
    };
    social_kit::recount::recompute("follow counters", margin, &store, graph).await
}
