//! Pulling requests: one per free run slot, each handed over with the slot
//! it will run in, from a task of its own (a pull cancelled halfway loses
//! what it had taken until the ack wait runs out).

use super::stopped;
use async_nats::jetstream::AckKind;
use std::sync::Arc;
use std::time::Duration;

pub(super) type Taken = (
    async_nats::jetstream::Message,
    tokio::sync::OwnedSemaphorePermit,
);

/// Pulls requests while there are free slots, each with the slot it will
/// run in, and hands them over as they come. Stops when told, or when
/// nobody takes them any more (those are handed back).
pub(super) async fn pull(
    consumer: async_nats::jetstream::consumer::PullConsumer,
    slots: Arc<tokio::sync::Semaphore>,
    taken: tokio::sync::mpsc::Sender<Taken>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Up to one request per free slot, each as soon as it is there;
        // the pull ends when all came or after 2 s.
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(Duration::from_secs(2))
            .messages()
            .await;
        let Ok(mut batch) = batch else {
            drop(permits);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut handing_back = false;
        // At most one message per permit, then the pull's end.
        for _ in 0..=permits.len() {
            // The pull ends by 2 s; a pull the server lost (sent while a
            // new consumer was still being set up across a cluster) must
            // not keep this worker idle long.
            let next = tokio::time::timeout(Duration::from_secs(3), batch.next()).await;
            let Ok(Some(Ok(m))) = next else { break };
            if handing_back || *stop.borrow() {
                handing_back = true;
                let _ = m.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            let Some(permit) = permits.pop() else {
                let _ = m.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            if let Err(back) = taken.send((m, permit)).await {
                // Nobody takes requests any more: this one and the rest of
                // the pull go back now, not after their ack wait.
                let _ = back.0.0.ack_with(AckKind::Nak(None)).await;
                handing_back = true;
            }
        }
        if handing_back {
            return;
        }
    }
}
