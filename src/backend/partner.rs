//! A partner thread for the second half of a split product (`host::gemm`).
//!
//! `rayon::join` called from outside rayon's pool (the training loop's own
//! thread, where a one-shard program runs) queues the work on the pool and
//! puts the caller to sleep: two or three futex wake-ups a product, each
//! tens of microseconds on a virtual machine, around halves that take
//! 50–600 µs. The partner instead spins between jobs for `SPIN`, as
//! OpenBLAS's threads do, so handing it a half is a write to one cache line,
//! and the caller runs the other half itself meanwhile. A half the partner
//! has not started by the time the caller is done with its own, the caller
//! takes back and runs too: when the partner's core is busy elsewhere (a
//! virtual machine's second vCPU often is), a split product costs what the
//! whole one would, not a wait for that core.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the partner spins for its next job before it sleeps: longer
/// than the gaps between a step's products (tens of microseconds to about
/// a millisecond), short enough that an idle process soon stops using a core.
const SPIN: Duration = Duration::from_millis(2);
/// After this much of `SPIN` the partner yields between looks, so threads
/// with work (rayon's, running a sharded program) get its core.
const SPIN_HOT: Duration = Duration::from_micros(50);
/// Spins between looks at the clock, and before a waiting caller yields.
const SPINS: u32 = 64;

/// No job; a job waiting for a thread; the partner running it; it is done.
const IDLE: u8 = 0;
const READY: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// A job on the caller's stack: its closure behind an erased pointer, and
/// where a panic inside it is kept for the caller to resume.
struct Job {
    call: unsafe fn(*mut ()),
    data: *mut (),
    panic: Option<Box<dyn Any + Send>>,
}

struct Partner {
    /// Held by the one caller whose job the partner may be running.
    caller: Mutex<()>,
    state: AtomicU8,
    asleep: AtomicBool,
    /// Written by the caller before `READY`, read by the partner after it.
    job: UnsafeCell<*mut Job>,
    thread: Thread,
}

// SAFETY: `job` is written only by the caller holding `caller`, before it
// publishes `READY` (release); the partner reads it only after claiming the
// job (READY to RUNNING, acquire) and before it publishes `DONE`. The caller
// either claims the job back (READY to IDLE) or waits for `DONE` before its
// stack frame, where the job lives, goes away.
unsafe impl Sync for Partner {}

/// The partner, started on first use; `None` when the system would not
/// give a thread (the caller then runs both halves itself).
fn partner() -> Option<&'static Partner> {
    static PARTNER: OnceLock<Option<&'static Partner>> = OnceLock::new();
    *PARTNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Partner>();
        let spawned = std::thread::Builder::new().name("ebmc-partner".into()).spawn(move || {
            // Cannot fire: the sender waits for this one message below.
            let me = rx.recv().expect("the partner's own handle");
            serve(me);
        });
        let handle = spawned.ok()?;
        let partner: &'static Partner = Box::leak(Box::new(Partner {
            caller: Mutex::new(()),
            state: AtomicU8::new(IDLE),
            asleep: AtomicBool::new(false),
            job: UnsafeCell::new(std::ptr::null_mut()),
            thread: handle.thread().clone(),
        }));
        tx.send(partner).ok()?;
        Some(partner)
    })
}

/// The partner's loop: spin for a job, sleep after `SPIN` without one.
fn serve(me: &'static Partner) -> ! {
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        while me.state.compare_exchange_weak(READY, RUNNING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
            spins += 1;
            if !spins.is_multiple_of(SPINS) {
                continue;
            }
            let waited = since.elapsed();
            if waited > SPIN_HOT {
                std::thread::yield_now();
            }
            if waited > SPIN {
                // SeqCst against the caller's READY then `asleep` check: one of
                // the two sees the other's write, so no wake-up is lost.
                me.asleep.store(true, Ordering::SeqCst);
                if me.state.load(Ordering::SeqCst) != READY {
                    std::thread::park();
                }
                me.asleep.store(false, Ordering::SeqCst);
                since = Instant::now();
            }
        }
        // SAFETY: READY was published after the job pointer was written, and
        // once claimed the caller keeps the job alive until it sees DONE (`Partner`).
        let job = unsafe { &mut **me.job.get() };
        // SAFETY: `call` is `run::<F>` for the `F` that `data` points to.
        job.panic = catch_unwind(AssertUnwindSafe(|| unsafe { (job.call)(job.data) })).err();
        me.state.store(DONE, Ordering::Release);
    }
}

/// Runs the `Option<F>` at `data`, once.
///
/// # Safety
/// `data` points to a live `Option<F>`.
unsafe fn run<F: FnOnce()>(data: *mut ()) {
    // SAFETY: the caller passes a pointer to a live `Option<F>`.
    let f = unsafe { &mut *data.cast::<Option<F>>() };
    if let Some(f) = f.take() {
        f();
    }
}

/// `run::<F>` for the closure in `b`.
fn runner<F: FnOnce()>(_: &Option<F>) -> unsafe fn(*mut ()) {
    run::<F>
}

/// Runs `a` and `b`, `b` on the partner thread when it is free and rayon is
/// given more than one thread, else as `rayon::join` would (inside rayon's
/// pool, or while another thread has the partner) or one after the other.
/// Either way each closure runs once and whole, so the results do not depend
/// on which thread ran what.
pub(crate) fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if rayon::current_num_threads() < 2 {
        a();
        b();
        return;
    }
    // A poisoned lock only means an earlier job panicked: its state was reset before the panic went on.
    let free = || {
        let p = partner()?;
        match p.caller.try_lock() {
            Ok(guard) => Some((p, guard)),
            Err(TryLockError::Poisoned(poisoned)) => Some((p, poisoned.into_inner())),
            Err(TryLockError::WouldBlock) => None,
        }
    };
    let (p, _guard) = match rayon::current_thread_index().map_or_else(free, |_| None) {
        Some(found) => found,
        None => {
            rayon::join(a, b);
            return;
        }
    };
    let mut b = Some(b);
    let mut job = Job { call: runner(&b), data: (&raw mut b).cast(), panic: None };
    // SAFETY: only the holder of `caller` writes the pointer, and the partner
    // reads it only after READY below (`Partner`).
    unsafe { *p.job.get() = &raw mut job };
    p.state.store(READY, Ordering::SeqCst);
    if p.asleep.load(Ordering::SeqCst) {
        p.thread.unpark();
    }
    // `b` borrows what `a` may too: settle it even when `a` panics.
    let ours = catch_unwind(AssertUnwindSafe(a));
    if p.state.compare_exchange(READY, IDLE, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        // The partner never started it: ours again.
        // SAFETY: `call` is `run::<F>` for the `F` that `data` points to.
        job.panic = catch_unwind(AssertUnwindSafe(|| unsafe { (job.call)(job.data) })).err();
    } else {
        let mut spins = 0u32;
        while p.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(SPINS) {
                std::thread::yield_now();
            }
        }
        p.state.store(IDLE, Ordering::Release);
    }
    if let Err(panic) = ours {
        resume_unwind(panic);
    }
    if let Some(panic) = job.panic.take() {
        resume_unwind(panic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_run_once_from_any_thread() {
        let mut halves = [0u32; 2];
        let (x, y) = halves.split_at_mut(1);
        join(|| x[0] += 1, || y[0] += 1);
        assert_eq!(halves, [1, 1]);
        // From inside rayon's pool, and from many threads at once.
        let sums: Vec<u32> = (0..64u32)
            .map(|i| {
                let (mut a, mut b) = (0, 0);
                rayon::scope(|_| join(|| a = i, || b = 2 * i));
                std::thread::scope(|s| {
                    s.spawn(|| join(|| a += 1, || b += 1));
                });
                a + b
            })
            .collect();
        assert_eq!(sums, (0..64u32).map(|i| 3 * i + 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_panic_in_the_partners_half_reaches_the_caller() {
        let caught = catch_unwind(|| join(|| (), || panic!("the partner's half")));
        assert!(caught.is_err());
        let mut after = 0;
        join(|| after += 1, || ());
        assert_eq!(after, 1);
    }
}
