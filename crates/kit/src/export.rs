//! Streaming everything of one kind to a client (account exports): pages read in a task
//! of their own and sent through a bounded channel, so that a large account is neither
//! held in memory nor read faster than the client takes it.

use std::future::Future;

use futures::{StreamExt, stream::BoxStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Pages in flight per stream.
const BUFFER: usize = 64;

/// A server stream of the items of every page `next_page` returns, in order, until an
/// empty page or an error (which ends the stream). `next_page` gets the key of the last
/// item of the previous page (its sort key, see `mongo::page_by_key`). Stops reading
/// when the client goes away.
pub fn paged<T, F, Fut>(mut next_page: F) -> BoxStream<'static, Result<T, Status>>
where
    T: Send + 'static,
    F: FnMut(Option<i64>) -> Fut + Send + 'static,
    Fut: Future<Output = crate::Result<Vec<(i64, T)>>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut after = None;
        loop {
            match next_page(after).await {
                Ok(page) if page.is_empty() => return,
                Ok(page) => {
                    after = page.last().map(|(id, _)| *id);
                    for (_, item) in page {
                        if tx.send(Ok(item)).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx).boxed()
}
