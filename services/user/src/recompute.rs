//! `social-user recompute-counters`: sets every user's `followers_count` and
//! `following_count` from the follows themselves, as counted by the social-graph
//! service. For the day counters drift (a bug, a restored backup). Counts move while it
//! runs; for exact numbers run it while the user service's consumer is drained (or run
//! it twice).

use social_kit::{Error, validate};
use social_proto::graph::v1::{
    CountFollowsRequest, social_graph_service_client::SocialGraphServiceClient,
};

use crate::{Config, store::Store};

/// Recomputes the counters of every user; returns how many users it visited.
pub async fn recompute_counters(config: &Config) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db);
    let peer = &config.graph_service;
    let mut graph = SocialGraphServiceClient::new(peer.channel());
    let (mut after, mut visited) = (None, 0_u64);
    loop {
        let ids = store.ids_after(after, validate::MAX_BATCH as i64).await?;
        let Some(last) = ids.last().copied() else {
            return Ok(visited);
        };
        let request = peer.request(CountFollowsRequest {
            user_ids: ids.iter().map(|id| id.to_hex()).collect(),
        });
        let counts = peer
            .call(graph.count_follows(request))
            .await
            .map_err(|s| peer.error(s))?;
        for c in counts.counts {
            let user = bson::oid::ObjectId::parse_str(&c.user_id).map_err(Error::internal)?;
            store
                .set_counts(user, c.followers_count, c.following_count)
                .await?;
        }
        visited += ids.len() as u64;
        tracing::info!(visited, "recomputed follow counters");
        after = Some(last);
    }
}
