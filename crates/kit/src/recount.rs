//! What the operators' `recompute-counters` commands share: the moment they count as
//! of, and a report that goes on past a failing batch.
//!
//! A recount counts the source documents as of a moment a margin in the past
//! (`RECOUNT_MARGIN_SECS`, default 120) and fences out the events up to it (see
//! `social_events::idempotency`): every event up to that moment has reached its source
//! document by then, unless an RPC ran longer than the margin or the services' clocks
//! disagree by more.

use std::{future::Future, time::Duration};

use bson::oid::ObjectId;

use crate::config::ConfigError;

/// `RECOUNT_MARGIN_SECS`: how far in the past a recount counts.
pub fn margin_from_env() -> Result<Duration, ConfigError> {
    crate::config::seconds_or("RECOUNT_MARGIN_SECS", 120)
}

/// The moment (ms since the epoch) a recount with `margin` counts as of.
pub fn as_of_ms(margin: Duration) -> i64 {
    let margin = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
    bson::DateTime::now().timestamp_millis().saturating_sub(margin)
}

/// Walks a whole collection in batches of ids (`next_ids(after)`, in id order, at most
/// [`crate::validate::MAX_BATCH`] each) and recounts each batch (`recount`: how many of
/// them changed); a batch that fails is reported and passed. How many documents were
/// recounted, or an error naming the failed batches. `what` names them in the logs.
pub async fn walk<Ids, Batch>(
    what: &'static str,
    mut next_ids: impl FnMut(Option<ObjectId>, i64) -> Ids,
    mut recount: impl FnMut(Vec<ObjectId>) -> Batch,
) -> anyhow::Result<u64>
where
    Ids: Future<Output = anyhow::Result<Vec<ObjectId>>>,
    Batch: Future<Output = anyhow::Result<u64>>,
{
    let mut report = Report::new(what);
    let mut after = None;
    loop {
        let ids = next_ids(after, crate::validate::MAX_BATCH as i64).await?;
        let Some(last) = ids.last().copied() else {
            return report.finish();
        };
        match recount(ids.clone()).await {
            Ok(n) => report.done(&ids, n),
            Err(e) => report.failed(&ids, &e),
        }
        after = Some(last);
    }
}

/// What a peer counted for one document as of a recount's moment: its id (hex) and its
/// two counters.
pub type Counted = (String, i64, i64);

/// A store that keeps two counters of each of its documents, counted by a peer.
pub trait Recounted {
    /// Ids after `after` in id order, at most `limit` (the `_id` index; removed documents
    /// too, whose counters no longer matter).
    fn ids_after(
        &self,
        after: Option<ObjectId>,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<Vec<ObjectId>>> + Send;

    /// Sets both counters of `id` as counted at `as_of_ms` (see
    /// `social_events::idempotency`); `false` if there is no such document.
    fn recount(
        &self,
        id: ObjectId,
        as_of_ms: i64,
        a: i64,
        b: i64,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Recounts every document of `store` from a peer's counts: walks its ids (see
/// [`walk`]), asks the peer for each batch's counts as of `margin` ago (`count(ids,
/// as_of)`), and sets them. How many documents were recounted.
pub async fn recompute<Count>(
    what: &'static str,
    margin: Duration,
    store: &impl Recounted,
    count: impl Fn(Vec<ObjectId>, i64) -> Count,
) -> anyhow::Result<u64>
where
    Count: Future<Output = anyhow::Result<Vec<Counted>>>,
{
    let as_of = as_of_ms(margin);
    walk(
        what,
        |after, limit| store.ids_after(after, limit),
        |ids| {
            let counted = count(ids, as_of);
            async move {
                let mut recounted = 0;
                for (id, a, b) in counted.await? {
                    let id = ObjectId::parse_str(&id).map_err(crate::Error::internal)?;
                    if store.recount(id, as_of, a, b).await? {
                        recounted += 1;
                    }
                }
                Ok(recounted)
            }
        },
    )
    .await
}

/// The moment `as_of` (ms) as a protobuf timestamp, for the peers' count requests.
pub fn as_of_timestamp(as_of: i64) -> prost_types::Timestamp {
    crate::time::to_timestamp(bson::DateTime::from_millis(as_of))
}

/// The operator's `recompute-counters` command of a service: `recompute(config,
/// margin)` with the margin of `RECOUNT_MARGIN_SECS`.
pub fn command<C, F, Fut>(recompute: F) -> crate::serve::Command<C>
where
    C: Send + 'static,
    F: FnOnce(C, Duration) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    crate::serve::Command::new(
        "recompute-counters",
        "recompute the counters this service keeps from events, from their source documents",
        move |config| {
            Box::pin(async move {
                let margin = margin_from_env()?;
                recompute(config, margin).await.map(drop)
            })
        },
    )
}

/// How far a recompute got: documents visited and recounted, and the batches that
/// failed (it goes on past them).
#[derive(Debug)]
pub struct Report {
    what: &'static str,
    visited: u64,
    recounted: u64,
    failed: Vec<String>,
}

impl Report {
    /// An empty report about `what` (e.g. "follow counters").
    pub fn new(what: &'static str) -> Self {
        Self { what, visited: 0, recounted: 0, failed: Vec::new() }
    }

    /// Records a batch of `ids` that went through, `recounted` of them changed.
    pub fn done(&mut self, ids: &[ObjectId], recounted: u64) {
        self.visited += ids.len() as u64;
        self.recounted += recounted;
        tracing::info!(visited = self.visited, what = self.what, "recounting");
    }

    /// Records a batch of `ids` that failed with `error`, and goes on.
    pub fn failed(&mut self, ids: &[ObjectId], error: &anyhow::Error) {
        self.visited += ids.len() as u64;
        let (first, last) = (ids.first(), ids.last());
        let range = match (first, last) {
            (Some(f), Some(l)) => format!("{f}..={l}"),
            _ => String::new(),
        };
        tracing::error!(error = %format!("{error:#}"), ids = %range, what = self.what, "a batch could not be recounted; going on");
        self.failed.push(format!("{range}: {error:#}"));
    }

    /// How many documents were recounted; an error naming the failed batches if any.
    pub fn finish(self) -> anyhow::Result<u64> {
        tracing::info!(
            visited = self.visited,
            recounted = self.recounted,
            failed_batches = self.failed.len(),
            what = self.what,
            "recount finished"
        );
        if self.failed.is_empty() {
            Ok(self.recounted)
        } else {
            anyhow::bail!(
                "{} batch(es) of {} could not be recounted (the rest was): {}",
                self.failed.len(),
                self.what,
                self.failed.join("; ")
            )
        }
    }
}
