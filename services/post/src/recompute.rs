//! `social-post recompute-counters`: sets every post's `likes_count` and
//! `comments_count` from the likes and comments themselves, as counted by the
//! engagement service. Exact while likes keep coming: they are counted as of a moment a
//! margin in the past and the events up to it are fenced out
//! (`social_events::idempotency`, docs/events.md).

use std::time::Duration;

use bson::oid::ObjectId;
use social_kit::Error;
use social_proto::engagement::v1::{
    CountPostEngagementRequest, engagement_service_client::EngagementServiceClient,
};

use crate::{Config, store::Store};

/// Recounts every post's counters as of `margin` ago; returns how many posts it
/// recounted, or an error naming the batches it could not (it goes on past them).
pub async fn recompute_counters(config: &Config, margin: Duration) -> anyhow::Result<u64> {
    let db = social_kit::mongo::connect(&config.common).await?;
    let store = Store::new(&db);
    store.init().await?;
    let as_of = social_kit::recount::as_of_ms(margin);
    // Counting a viral post takes longer than an RPC's usual deadline.
    let peer = config
        .engagement_service
        .with_timeout(Duration::from_secs(60));
    social_kit::recount::walk(
        "post counters",
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
    let mut engagement = EngagementServiceClient::new(peer.channel());
    let request = peer.request(CountPostEngagementRequest {
        post_ids: ids.iter().map(|id| id.to_hex()).collect(),
        as_of: Some(social_kit::time::to_timestamp(bson::DateTime::from_millis(
            as_of,
        ))),
    });
    let counts = peer
        .call(engagement.count_post_engagement(request))
        .await
        .map_err(|s| peer.error(s))?;
    let mut recounted = 0;
    for c in counts.counts {
        let post = ObjectId::parse_str(&c.post_id).map_err(Error::internal)?;
        if store
            .recount(post, as_of, c.likes_count, c.comments_count)
            .await?
        {
            recounted += 1;
        }
    }
    Ok(recounted)
}
