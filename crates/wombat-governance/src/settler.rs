//! Settlement off the request path, for a shared store: a finished call's
//! settle-and-record is queued and written by one background task, in
//! batches (one round trip to Redis per batch, gathered over [`LINGER`]),
//! so a send no longer waits for its second round trip and, under steady
//! traffic, no longer pays for one either.
//!
//! What still holds:
//! - The reservation (and the concurrency slot) is held until the settlement
//!   is written: a queued settlement is a request still in flight, so the
//!   overshoot bound (the budget plus the estimates in flight) is unchanged.
//! - A replica reads its own writes: [`crate::Governor::usage`] and any
//!   admission under a concurrency limit first wait (bounded) for the
//!   settlements queued before them.
//! - Nothing is lost silently: the queue is bounded; when it is full (or no
//!   worker can run) the call settles inline as before, counted by
//!   `settle_inline`. On shutdown [`crate::Governor::flush`] drains it within
//!   a bound, and dropping the governor lets the worker finish the queue.
//! - Other replicas see a settlement once it is written: normally within
//!   [`LINGER`] (10 ms) plus a Redis round trip of the call's end; when the
//!   store is slow, within the store timeout per batch ahead of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::governor::{Core, GRANT_TTL};
use crate::limits::Periods;
use crate::store::{SettleRequest, Settlement, UsageRecord};

/// Most settlements waiting to be written, by default. Past it, calls
/// settle inline (a store slower than the daemon's send rate must not make
/// the queue, and what a crash loses, grow without bound).
pub(crate) const CAPACITY: usize = 8192;

/// How long the worker, woken by a first settlement, lets others join its
/// batch before writing. Under steady traffic this turns one round trip
/// (and its task wake-ups and syscalls) per call into one per batch, and
/// the store adds a batch up per user before writing it; it is also how
/// late another replica may see a settlement (plus a round trip), while
/// the reservation still counts. Anyone who waits for the queue
/// ([`Settler::flush`]) cuts it short. 10 ms rather than 2: at one user's
/// c=1 send rate (~3,000/s) 2 ms batches cost the daemon ~21 µs of CPU per
/// send and 10 ms ones ~5.5 µs (`XTASK_BENCH_ONLY=limits cargo xtask bench`).
pub(crate) const LINGER: Duration = Duration::from_millis(10);

/// Most settlements in one round trip (bounds one pipeline's size and how
/// long the store works on it).
const MAX_BATCH: usize = 256;

/// A reservation to settle: the owned half of a [`SettleRequest`].
#[derive(Debug)]
pub(crate) struct LeaseSettle {
    pub(crate) user: String,
    pub(crate) id: String,
    pub(crate) cost_micros: u64,
    pub(crate) token_delta: i64,
    pub(crate) unit_micros: u64,
    pub(crate) release: bool,
    pub(crate) unused_units: u32,
    pub(crate) rpm: Option<u32>,
    pub(crate) tpm: Option<u64>,
}

/// One finished call (or a grant's release alone), owned, waiting in the
/// queue.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) lease: Option<LeaseSettle>,
    /// Whether the call goes to the usage ledger (not for a release alone).
    pub(crate) record: bool,
    pub(crate) user: String,
    pub(crate) model: String,
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) total: u64,
    pub(crate) cost_micros: u64,
    pub(crate) estimated: bool,
    pub(crate) periods: Periods,
    pub(crate) day_ttl_secs: u64,
    pub(crate) month_ttl_secs: u64,
}

impl Job {
    /// The borrowed form the [`crate::Store`] takes.
    pub(crate) fn view(&self) -> Settlement<'_> {
        Settlement {
            settle: self.lease.as_ref().map(|l| SettleRequest {
                user: &l.user,
                lease: &l.id,
                cost_micros: l.cost_micros,
                token_delta: l.token_delta,
                unit_micros: l.unit_micros,
                release: l.release,
                unused_units: l.unused_units,
                rpm: l.rpm,
                tpm: l.tpm,
                periods: &self.periods,
                day_ttl_secs: self.day_ttl_secs,
                month_ttl_secs: self.month_ttl_secs,
            }),
            record: self.record.then(|| UsageRecord {
                user: &self.user,
                model: &self.model,
                input: self.input,
                output: self.output,
                total: self.total,
                cost_micros: self.cost_micros,
                estimated: self.estimated,
                day: &self.periods.day,
            }),
        }
    }
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// The governor is gone: the worker writes what is left, then ends.
    closed: bool,
}

/// The queue and its one worker.
pub(crate) struct Settler {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Wakes the worker when the queue turns non-empty (or closes).
    wake: Notify,
    /// Cuts the worker's linger short: someone waits for the queue.
    kick: Notify,
    /// Whether the worker was spawned.
    started: AtomicBool,
    /// Settlements ever queued.
    queued: AtomicU64,
    /// Settlements finished (written, or failed and counted).
    done: watch::Sender<u64>,
}

impl Settler {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            capacity,
            wake: Notify::new(),
            kick: Notify::new(),
            started: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            done: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds plain data: a panic elsewhere cannot leave it
        // half-updated.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`; gives it back when it must be settled inline (queue
    /// full or closed, or no runtime to run the worker on).
    pub(crate) fn push(self: &Arc<Self>, core: &Arc<Core>, job: Job) -> Option<Job> {
        if !self.started.load(Ordering::Acquire) {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return Some(job);
            };
            if !self.started.swap(true, Ordering::AcqRel) {
                rt.spawn(run(core.clone(), self.clone()));
            }
        }
        let was_empty = {
            let mut q = self.lock();
            if q.closed || q.jobs.len() >= self.capacity {
                return Some(job);
            }
            let was_empty = q.jobs.is_empty();
            q.jobs.push(job);
            self.queued.fetch_add(1, Ordering::Release);
            was_empty
        };
        if was_empty {
            // A worker busy writing finds the job when it looks again; a
            // worker asleep is woken (or finds the stored permit).
            self.wake.notify_one();
        }
        None
    }

    /// Starts the worker if it is not running, and wakes it (it sweeps the
    /// grants held, which may have been taken since it last looked).
    pub(crate) fn start(self: &Arc<Self>, core: &Arc<Core>) {
        if !self.started.load(Ordering::Acquire) {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            if !self.started.swap(true, Ordering::AcqRel) {
                rt.spawn(run(core.clone(), self.clone()));
            }
        }
        self.wake.notify_one();
    }

    /// Whether settlements are queued or being written.
    pub(crate) fn pending(&self) -> bool {
        self.queued.load(Ordering::Acquire) > *self.done.borrow()
    }

    /// Waits until every settlement queued before this call is finished,
    /// at most `bound`. Whether they all were.
    pub(crate) async fn flush(&self, bound: Duration) -> bool {
        let target = self.queued.load(Ordering::Acquire);
        let mut done = self.done.subscribe();
        if *done.borrow_and_update() >= target {
            return true;
        }
        self.kick.notify_one();
        matches!(
            tokio::time::timeout(bound, done.wait_for(|d| *d >= target)).await,
            Ok(Ok(_))
        )
    }

    /// Settlements queued and not yet finished.
    pub(crate) fn backlog(&self) -> u64 {
        self.queued
            .load(Ordering::Acquire)
            .saturating_sub(*self.done.borrow())
    }

    /// The governor is gone: the worker finishes the queue and ends.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
        self.kick.notify_one();
    }

    /// Up to [`MAX_BATCH`] jobs, oldest first, and whether the queue closed.
    fn take(&self) -> (Vec<Job>, bool) {
        let mut q = self.lock();
        let n = q.jobs.len().min(MAX_BATCH);
        let batch = if n == q.jobs.len() {
            std::mem::take(&mut q.jobs)
        } else {
            q.jobs.drain(..n).collect()
        };
        (batch, q.closed)
    }
}

/// The worker: writes the queue in batches until it is closed and empty.
/// While grants are held it also gives back, every [`GRANT_TTL`], those
/// past their time that no admission replaced (a user who went quiet).
async fn run(core: Arc<Core>, settler: Arc<Settler>) {
    let mut next_sweep = tokio::time::Instant::now() + GRANT_TTL;
    loop {
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + GRANT_TTL;
            // Behind the settlements already queued: a grant's release
            // never overtakes its calls' costs.
            for job in core.sweep_grants() {
                if let Some(job) = settler.push(&core, job) {
                    core.settle_jobs(std::slice::from_ref(&job), "releasing a grant")
                        .await;
                }
            }
        }
        let (batch, closed) = settler.take();
        if batch.is_empty() {
            if closed {
                return;
            }
            if core.holds_grants() {
                // Woken by work or by the next sweep, whichever is first.
                if tokio::time::timeout_at(next_sweep, settler.wake.notified())
                    .await
                    .is_err()
                {
                    continue;
                }
            } else {
                settler.wake.notified().await;
            }
            let _ = tokio::time::timeout(LINGER, settler.kick.notified()).await;
            continue;
        }
        core.settle_jobs(&batch, "settling calls in the background")
            .await;
        let n = batch.len() as u64;
        settler.done.send_modify(|d| *d += n);
    }
}
