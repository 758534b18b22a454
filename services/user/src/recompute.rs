//! `social-user recompute-counters`: sets every user's `followers_count` and
//! `following_count` from the follows themselves, as counted by the social-graph
//! service, for the day counters drift (a bug, a restored backup). Exact while follows
//! keep coming: the follows are counted as of a moment a margin in the past and the
//! events up to it are fenced out (`social_events::idempotency`, docs/events.md).

use std::time::Duration;

use bson::oid::ObjectId;
use social_kit::Error;
use social_proto::graph::v1::{
    CountFollowsRequest, social_graph_service_client::SocialGraphServiceClient,
};

use crate::{Config, store::Store};

/// Recounts every user's follow counters as of `margin` ago; returns how many users it
/// recounted, or an error naming the batches it could not (it goes on past them).
pub async fn recompute_counters(config: &Config, margin: Duration) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db);
    store.init().await?;
    let as_of = social_kit::recount::as_of_ms(margin);
    // Counting a user with many followers takes longer than an RPC's usual deadline.
    let peer = config.graph_service.with_timeout(Duration::from_secs(60));
    social_kit::recount::walk(
        "follow counters",
        |after, limit| {
            let store = store.clone();
            async move { Ok(store.ids_after(after, limit).await?) }
        },
        |ids| {
            let (store, peer) = (store.clone(), peer.clone());
            async move { recount(&store, &peer, &ids, as_of).await }
        },
    )
    .await
}

async fn recount(
    store: &Store,
    peer: &social_kit::client::Peer,
    ids: &[ObjectId],
    as_of: i64,
) -> anyhow::Result<u64> {
    let mut graph = SocialGraphServiceClient::new(peer.channel());
    let request = peer.request(CountFollowsRequest {
        user_ids: ids.iter().map(|id| id.to_hex()).collect(),
        as_of: Some(social_kit::time::to_timestamp(bson::DateTime::from_millis(
            as_of,
        ))),
    });
    let counts = peer
        .call(graph.count_follows(request))
        .await
        .map_err(|s| peer.error(s))?;
    let mut recounted = 0;
    for c in counts.counts {
        let user = ObjectId::parse_str(&c.user_id).map_err(Error::internal)?;
        if store
            .recount(user, as_of, c.followers_count, c.following_count)
            .await?
        {
            recounted += 1;
        }
    }
    Ok(recounted)
}
