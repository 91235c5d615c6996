//! The time a future spends being polled: a step's own work on a thread
//! (instantiation, guest code, host calls that answer at once), without
//! the time it waited for a thread while other steps ran. With hundreds
//! of runs in flight a step's wall time is mostly that wait; `bench`
//! reports both.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pin_project_lite::pin_project! {
    /// `inner`, counting the time spent in its `poll`.
    pub(crate) struct Busy<F> {
        #[pin]
        inner: F,
        spent: Duration,
    }
}

impl<F> Busy<F> {
    pub(crate) fn new(inner: F) -> Self {
        Busy {
            inner,
            spent: Duration::ZERO,
        }
    }

    /// The time spent polling so far.
    pub(crate) fn spent(&self) -> Duration {
        self.spent
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let from = Instant::now();
        let polled = this.inner.poll(cx);
        *this.spent += from.elapsed();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiting (a timer, another task) is not counted; work is.
    #[tokio::test]
    async fn only_the_time_in_poll_counts() {
        let work = Duration::from_millis(30);
        let mut busy = Box::pin(Busy::new(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::thread::sleep(work);
        }));
        let started = Instant::now();
        (&mut busy).await;
        let spent = busy.spent();
        assert!(spent >= work, "{spent:?}");
        // It waited 300 ms it did not spend.
        assert!(
            spent < started.elapsed() - Duration::from_millis(200),
            "{spent:?}"
        );
    }
}
