//! Streaming everything of one kind to a client (account exports): pages read in a task
//! of their own and sent through a bounded channel, so that a large account is neither
//! held in memory nor read faster than the client takes it.

use std::{future::Future, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Items in flight per stream.
const BUFFER: usize = 64;

/// `stream` for at most `life` from now: a read past it gets one `DEADLINE_EXCEEDED`,
/// which ends it. A deadline sent with a call bounds only its opening, not the messages
/// of its stream: without this, a client reading a byte now and then would hold the
/// stream, and the reads of the services behind it, for as long as it liked.
pub fn within<T: Send + 'static>(
    stream: BoxStream<'static, Result<T, Status>>,
    life: Duration,
) -> BoxStream<'static, Result<T, Status>> {
    let deadline = Box::pin(tokio::time::sleep(life));
    futures::stream::unfold(Some((stream, deadline)), |state| async move {
        let (mut stream, mut deadline) = state?;
        tokio::select! {
            biased;
            () = &mut deadline => {
                let late = "the export took longer than it may; ask for it again";
                Some((Err(Status::deadline_exceeded(late)), None))
            }
            item = stream.next() => item.map(|item| (item, Some((stream, deadline)))),
        }
    })
    .boxed()
}

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
