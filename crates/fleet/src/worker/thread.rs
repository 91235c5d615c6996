//! Each run on a thread of its own, driven by a current-thread runtime, as
//! the CLI drives one.
//!
//! Why: a run's journal and lease calls are synchronous, and on JetStream
//! each waits for NATS to answer (`Fleet::wait`). Awaited on the worker's
//! shared runtime, every such wait holds one of its few threads (one per
//! core), so about that many runs made progress whatever `--concurrency`
//! said, and the requests, heartbeats and health answers of every other
//! run waited behind them. On threads of their own, `--concurrency` runs
//! wait for NATS at the same time and the shared runtime stays free.

use anyhow::{Result, anyhow};
use std::future::Future;

/// Runs `make()`'s future to its end on a blocking-pool thread with a
/// runtime of its own. Dropping the returned future (a run handed back at
/// shutdown) cancels the run at its next await, as dropping it on the
/// shared runtime did; a panic on the run's thread is a panic here.
pub(super) async fn on_own_thread<F, Fut, T>(make: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let thread = tokio::task::spawn_blocking(move || -> Result<Option<T>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow!("starting a run's runtime: {e}"))?;
        rt.block_on(async move {
            tokio::select! {
                done = make() => done.map(Some),
                // The sender is dropped with the caller's future.
                _ = cancelled => Ok(None),
            }
        })
    });
    let joined = thread.await;
    drop(cancel);
    match joined {
        Ok(Ok(Some(done))) => Ok(done),
        Ok(Ok(None)) => Err(anyhow!("the run was cancelled")),
        Ok(Err(e)) => Err(e),
        // A panic goes on up, as it did when the run was awaited here:
        // the request's task ends without unparking or paging anything.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow!("the run's thread ended abnormally: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A worker's shared runtime at its smallest: one thread, which a run
    /// awaited on it would hold.
    fn shared_runtime_of_one_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs that block their thread (as a journal write waiting for NATS
    /// does) still all wait at the same time: 8 runs on a runtime with one
    /// worker thread each block until all 8 have started. Awaited on that
    /// one thread, the first would wait alone and give up after 5 s.
    #[test]
    fn blocking_runs_do_not_hold_the_shared_runtime() {
        let rt = shared_runtime_of_one_thread();
        let arrived = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let mut runs = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let arrived = arrived.clone();
                runs.spawn(on_own_thread(move || async move {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    for _ in 0..500 {
                        if arrived.load(Ordering::SeqCst) == 8 {
                            return Ok(true);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Ok(false)
                }));
            }
            while let Some(r) = runs.join_next().await {
                assert!(
                    r.unwrap().unwrap(),
                    "a run waited alone: runs were serialised"
                );
            }
        });
    }

    /// A run whose caller goes away (handed back at shutdown) stops at its
    /// next await instead of running on unseen.
    #[test]
    fn dropping_the_caller_cancels_the_run() {
        let rt = shared_runtime_of_one_thread();
        let went_on = Arc::new(AtomicUsize::new(0));
        let seen = went_on.clone();
        rt.block_on(async move {
            let run = tokio::spawn(on_own_thread(move || async move {
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
            run.abort();
            let _ = run.await;
            let at_abort = went_on.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            // At most the await in progress finishes.
            assert!(went_on.load(Ordering::SeqCst) <= at_abort + 2);
            assert!(at_abort < 50);
        });
    }
}
