//! The node's BLS checks, verified together across concurrent requests
//! ([`tally_kernel::crypto::bls::verify_batch`]).
//!
//! In a fair exchange the node checks B's verifiably encrypted signature (escrow) and B's
//! signature (sign). Alone each costs about 1 ms here, most of it a final exponentiation that
//! a batch shares; in a batch each costs about a quarter of that. A request hands its check
//! to [`Batcher::verify`] and waits. One blocking task verifies whatever is waiting, then
//! whatever arrived meanwhile, until nothing is left; then it ends, and the next request
//! starts another. There is no timer: a lone request is verified at once, as before, and
//! under load a batch is what queued while the previous one ran (group commit, as the ledger
//! writer does it).
//!
//! A batch with a bad check in it verifies each check alone, so the bad one is refused with
//! its own error and the others pass. Nothing here is state: a result depends only on the
//! check, so a node that stops mid-batch loses only answers that its clients ask for again.
//!
//! Rejected: a fixed wait to let batches fill (adds its whole length to a lone request);
//! verifying on the request's own task while others wait for it (the first request's answer
//! would wait for everyone's).

use crate::Result;
use crate::identity::setup;
use std::sync::{Arc, Mutex, MutexGuard};
use tally_kernel::crypto::CryptoError;
use tally_kernel::crypto::bls::{Check, verify_batch};
use tokio::sync::oneshot;

/// Most checks in one batch: bounds how long the last check of a batch waits for the others
/// (about 0.3 ms each).
pub const BATCH_MAX: usize = 64;

type Answer = oneshot::Sender<std::result::Result<(), CryptoError>>;

/// Checks waiting, and whether a task is verifying.
#[derive(Default)]
struct Queue {
    waiting: Vec<(Check, Answer)>,
    running: bool,
}

/// BLS checks of concurrent requests, verified in batches.
#[derive(Default)]
pub struct Batcher {
    queue: Mutex<Queue>,
}

impl Batcher {
    /// What [`Check::verify`] says for `check`, verified in a batch with the checks that other
    /// requests are waiting for. The outer error is the node's (the verifying task failed),
    /// the inner one the check's.
    pub async fn verify(
        self: &Arc<Self>,
        check: Check,
    ) -> Result<std::result::Result<(), CryptoError>> {
        let (answer, result) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push((check, answer));
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.run());
        }
        result
            .await
            .map_err(|_| setup("the BLS verifying task failed"))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue that is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Verifies batches until none is waiting.
    fn run(&self) {
        loop {
            let batch: Vec<(Check, Answer)> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                let take = queue.waiting.len().min(BATCH_MAX);
                queue.waiting.drain(..take).collect()
            };
            let (checks, answers): (Vec<Check>, Vec<Answer>) = batch.into_iter().unzip();
            // A panic drops this batch's answers (their requests fail, as the node's fault),
            // not the task: the queue behind it is still served.
            let Ok(results) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify_batch(&checks)))
            else {
                continue;
            };
            for (answer, result) in answers.into_iter().zip(results) {
                // A request that stopped waiting (its client went away) needs no answer.
                let _ = answer.send(result);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use tally_kernel::crypto::bls::BlsSecretKey;

    const DOMAIN: &[u8] = b"tally/test/v1\0";

    fn check(i: u8, good: bool) -> Check {
        let sk = BlsSecretKey::from_seed(&[i; 32]);
        let msg = vec![i; 40];
        let signed = if good { msg.clone() } else { vec![0; 40] };
        Check::Signature {
            key: sk.public_key(),
            domain: DOMAIN,
            msg,
            sig: sk.sign(DOMAIN, &signed),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_get_their_own_answers() {
        let batcher = Arc::new(Batcher::default());
        // More requests than one batch takes, one in seven bad.
        let tasks: Vec<_> = (1..=150_u8)
            .map(|i| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { (i, batcher.verify(check(i, i % 7 != 0)).await) })
            })
            .collect();
        for task in tasks {
            let (i, result) = task.await.unwrap();
            match result.unwrap() {
                Ok(()) => assert!(i % 7 != 0, "bad check {i} accepted"),
                Err(e) => {
                    assert!(i % 7 == 0, "good check {i} refused");
                    assert!(matches!(e, CryptoError::BadSignature));
                }
            }
        }
        // The task ended with the queue empty, and the next request starts another.
        assert!(!batcher.lock().running && batcher.lock().waiting.is_empty());
        assert!(batcher.verify(check(1, true)).await.unwrap().is_ok());
    }
}
