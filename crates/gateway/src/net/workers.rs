//! Thread per core: the threads that serve connections. Each runs a current-thread tokio
//! runtime of its own, and a connection lives its whole life on the thread it was given:
//! its socket, its io_uring, its timers and its commands are polled by that one thread, so
//! an I/O never hops between threads (no futex hand-off, no cross-core wake-up) and nothing
//! on the data path is shared with connections of other threads.
//!
//! The acceptor (on the control runtime) gives each new connection to the thread serving
//! the fewest connections. Measured against tokio's work-stealing runtime in
//! ARCHITECTURE.md ("Data path").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, error};

use super::idle_poll;

/// Work handed to a thread: builds the connection's future on that thread (so what it
/// registers with the reactor, the socket and the ring, belongs to that thread's runtime).
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections this thread serves now.
    load: Arc<AtomicUsize>,
}

/// The connection threads. Dropping it ends them once their current jobs are handed over;
/// tasks still running then are cancelled with their runtime.
pub struct Workers {
    workers: Vec<Worker>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` threads (at least one), named `gateway-io-N`, each polling its
    /// connections for up to `idle_poll` before it sleeps (`idle_poll.rs`; zero: never) and
    /// each with a registered-buffer arena of `arena_bytes` (`block/registered.rs`; zero:
    /// none).
    pub fn start(
        count: usize,
        idle_poll: Duration,
        arena_bytes: usize,
    ) -> std::io::Result<Workers> {
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for n in 0..count.max(1) {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_all();
            if !idle_poll.is_zero() {
                builder
                    .on_thread_park(idle_poll::before_park)
                    .on_thread_unpark(idle_poll::after_unpark);
            }
            let rt = builder.build()?;
            let (tx, rx) = mpsc::unbounded_channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(format!("gateway-io-{n}"))
                .spawn(move || {
                    idle_poll::enable(idle_poll);
                    bufpool::enable_thread_arena(arena_bytes);
                    run(rt, rx)
                })?;
            workers.push(Worker {
                jobs: tx,
                load: Arc::new(AtomicUsize::new(0)),
            });
            threads.push(thread);
        }
        debug!(threads = workers.len(), "connection threads started");
        Ok(Workers { workers, threads })
    }

    /// The number of threads `server.io_threads` asks for: itself, or with 0 one per CPU
    /// this process may run on (affinity and cgroup quota count, as in a container).
    pub fn count_for(configured: u32) -> usize {
        match configured {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }

    /// Number of threads.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Connections each thread serves now.
    pub fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs the future `make` builds on the least loaded thread, counted there until it
    /// ends. Returns false when no thread takes it (they have stopped).
    pub fn spawn<F, Fut>(&self, make: F) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
        else {
            return false;
        };
        let load = worker.load.clone();
        load.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _count = LoadGuard(load);
                make().await;
            })
        });
        match worker.jobs.send(job) {
            Ok(()) => true,
            Err(_) => {
                // The job (and its guard, never created) is dropped: undo the count.
                worker.load.fetch_sub(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Takes one connection off its thread's count when the connection ends, however it ends.
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.workers.clear();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                error!("a connection thread panicked");
            }
        }
    }
}

/// A thread's life: run every job it is given as a task of its runtime, until the sender
/// is gone; then the runtime (and whatever still runs on it) is dropped.
fn run(rt: tokio::runtime::Runtime, mut jobs: mpsc::UnboundedReceiver<Job>) {
    rt.block_on(async move {
        while let Some(job) = jobs.recv().await {
            tokio::spawn(job());
        }
    });
    // Connections still running were given SHUTDOWN_GRACE already; blocking work (a
    // reservation save) gets a moment more.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn jobs_go_to_the_least_loaded_thread_and_stay_on_it() {
        let workers = Workers::start(2, Duration::ZERO, 0).unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let names = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..4 {
            let (names, release_rx) = (names.clone(), release_rx.clone());
            assert!(workers.spawn(move || async move {
                let before = std::thread::current().name().map(str::to_owned);
                // Hold the connection open until released, yielding so others run too.
                for _ in 0..500 {
                    if release_rx.lock().unwrap().try_recv().is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let after = std::thread::current().name().map(str::to_owned);
                names.lock().unwrap().push((before, after));
            }));
        }
        // Four connections on two threads: two each.
        assert_eq!(workers.loads(), vec![2, 2]);
        for _ in 0..4 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..200 {
            if workers.loads() == vec![0, 0] {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(workers.loads(), vec![0, 0]);
        let names = names.lock().unwrap();
        assert_eq!(names.len(), 4);
        for (before, after) in names.iter() {
            assert_eq!(before, after, "a connection moved between threads");
            assert!(before
                .as_deref()
                .is_some_and(|n| n.starts_with("gateway-io-")));
        }
    }

    #[test]
    fn count_for_zero_is_the_cpus_and_otherwise_the_setting() {
        assert!(Workers::count_for(0) >= 1);
        assert_eq!(Workers::count_for(3), 3);
    }
}
