//! Streaming everything of one kind to a client (account exports): pages read in a task
//! of their own and sent through a bounded channel, so that a large account is neither
//! held in memory nor read faster than the client takes it.

use std::{future::Future, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Items in flight per stream.
const BUFFER: usize = 64;

/// How long an export waits for its reader to take the next item before it lets go.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `stream` for at most `life` from now, and while its reader keeps up: read ahead by a
/// task of its own, which drops it (ending the reads of the services behind it) once
/// `life` has passed or the reader has taken nothing for `patience`, whether or not the
/// reader comes back. A reader that does comes back gets what was read ahead, then
/// `late`, so that the end does not look like a complete stream. (A deadline sent with a
/// call bounds only its opening; and what a stream has received and not yet been read
/// holds its connection's flow-control window, shared with every other call on it.)
pub fn within<T: Send + 'static>(
    mut stream: BoxStream<'static, T>,
    life: Duration,
    patience: Duration,
    late: T,
) -> BoxStream<'static, T> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(life);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut deadline => break,
                () = tx.closed() => return, // the reader went away
                next = stream.next() => next,
            };
            let Some(item) = next else {
                return; // complete: the reader sees the end
            };
            tokio::select! {
                biased;
                () = &mut deadline => break,
                () = tokio::time::sleep(patience) => break,
                sent = tx.send(item) => if sent.is_err() {
                    return; // the reader went away
                },
            }
        }
        drop(stream);
        let _ = tx.send(late).await;
    });
    ReceiverStream::new(rx).boxed()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream fed by hand, and its feeder.
    fn fed() -> (tokio::sync::mpsc::Sender<u32>, BoxStream<'static, u32>) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (tx, ReceiverStream::new(rx).boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_life_a_stream_is_dropped_though_nobody_reads_and_a_late_reader_is_told() {
        let (source, stream) = fed();
        let mut read = within(stream, Duration::from_secs(1), Duration::from_secs(3600), 0);
        source.send(1).await.unwrap();
        assert_eq!(read.next().await, Some(1));
        // Nobody reads on; the source is still open.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(source.is_closed(), "dropped at its deadline, unread");
        assert_eq!(read.next().await, Some(0), "told it came late");
        assert_eq!(read.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_for_its_patience_lets_go_of_the_stream() {
        let (source, stream) = fed();
        let mut read = within(stream, Duration::from_secs(3600), Duration::from_secs(1), 0);
        for n in 1..=5 {
            source.send(n).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(source.is_closed(), "dropped once the reader kept it waiting");
        assert_eq!(read.next().await, Some(1), "what was read ahead");
        assert_eq!(read.next().await, Some(0));
        assert_eq!(read.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_leaves_lets_go_of_a_stream_that_sends_nothing() {
        let (source, stream) = fed();
        let read = within(stream, Duration::from_secs(3600), Duration::from_secs(3600), 0);
        tokio::task::yield_now().await;
        drop(read);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(source.is_closed(), "dropped once its reader left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_read_in_time_is_whole() {
        let (source, stream) = fed();
        let mut read = within(stream, Duration::from_secs(60), Duration::from_secs(1), 0);
        for n in 1..=3 {
            source.send(n).await.unwrap();
        }
        drop(source);
        let all: Vec<u32> = read.by_ref().collect().await;
        assert_eq!(all, [1, 2, 3]);
    }
}
