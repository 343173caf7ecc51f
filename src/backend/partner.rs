//! A partner thread for the pieces of a split product (`host::gemm`).
//!
//! `rayon::join` called from outside rayon's pool (the training loop's own
//! thread, where a one-shard program runs) queues the work on the pool and
//! puts the caller to sleep: two or three futex wake-ups a product, each
//! tens of microseconds on a virtual machine, around products that take
//! 50–600 µs. The partner instead spins between jobs for `SPIN`, as
//! OpenBLAS's threads do, so handing it a job is a write to one cache line,
//! and the caller works on the same job meanwhile. A job is a few pieces
//! (column or row blocks of one product), each claimed by whichever of the
//! two threads is free: when the partner's core is busy elsewhere (a virtual
//! machine's second vCPU often is), the caller runs the pieces the partner
//! never claimed, so a stall costs at most one piece, not a wait for that
//! core. Halves, as before, waited for the stalled half.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
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

/// A job on the caller's stack: the claiming loop behind an erased pointer,
/// and where a panic inside it is kept for the caller to resume.
struct Job {
    call: unsafe fn(*const ()),
    data: *const (),
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
        // SAFETY: `call` is `run::<F>` for the `Pieces<F>` that `data` points to.
        job.panic = catch_unwind(AssertUnwindSafe(|| unsafe { (job.call)(job.data) })).err();
        me.state.store(DONE, Ordering::Release);
    }
}

/// The pieces of one job, claimed one at a time by whichever thread is free.
struct Pieces<'a, F> {
    next: AtomicUsize,
    count: usize,
    f: &'a F,
}

impl<F: Fn(usize)> Pieces<'_, F> {
    /// Runs pieces until none is left to claim.
    fn claim(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.count {
                return;
            }
            (self.f)(i);
        }
    }
}

/// Claims pieces of the `Pieces<F>` at `data` until none is left.
///
/// # Safety
/// `data` points to a live `Pieces<F>`.
unsafe fn run<F: Fn(usize)>(data: *const ()) {
    // SAFETY: the caller passes a pointer to a live `Pieces<F>`.
    unsafe { &*data.cast::<Pieces<F>>() }.claim();
}

/// `run::<F>` for the pieces in `p`.
fn runner<F: Fn(usize)>(_: &Pieces<F>) -> unsafe fn(*const ()) {
    run::<F>
}

/// `out`'s start, shared by the threads running `for_each_chunk`'s pieces,
/// each of which reaches only its own chunk.
#[derive(Clone, Copy)]
struct Base(*mut f32);

impl Base {
    /// Chunk `i` of `piece` elements of a buffer of `len`.
    ///
    /// # Safety
    /// The buffer is live and borrowed mutably for the whole call, and no
    /// other thread reaches chunk `i` meanwhile.
    unsafe fn chunk<'a>(self, i: usize, piece: usize, len: usize) -> &'a mut [f32] {
        let start = i * piece;
        // SAFETY: `start` and the chunk's end lie inside the buffer; the caller keeps it live and the chunk its own.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), piece.min(len - start)) }
    }
}

// SAFETY: each piece reaches only its own chunk (`Base::chunk`), and `for_each` returns after every piece.
unsafe impl Send for Base {}
// SAFETY: as for `Send`.
unsafe impl Sync for Base {}

/// `f(i, chunk)` for each chunk `i` of `piece` elements of `out` (the last
/// one shorter), run as `for_each` runs pieces: an elementwise loop over a
/// large output shares the partner with the products, rather than waking
/// rayon's pool from outside it (a few futex wake-ups a loop).
pub(crate) fn for_each_chunk(out: &mut [f32], piece: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let (len, piece) = (out.len(), piece.max(1));
    let base = Base(out.as_mut_ptr());
    // SAFETY: `out` is borrowed mutably until `for_each` returns, after every
    // piece, and each index, so each chunk, is run once.
    for_each(len.div_ceil(piece), |i| f(i, unsafe { base.chunk(i, piece, len) }));
}

/// Runs `f(0)`, …, `f(count - 1)`, each once and whole, on this thread and
/// the partner thread when it is free and rayon is given more than one
/// thread, else on rayon's threads (inside rayon's pool, or while another
/// thread has the partner) or one after the other. Each thread claims the
/// next piece when it is done with its last, so a partner whose core is
/// busy elsewhere costs at most the piece it is running: the caller runs
/// every piece the partner has not claimed. Which thread runs a piece never
/// changes what it computes.
pub(crate) fn for_each(count: usize, f: impl Fn(usize) + Sync) {
    if count < 2 || rayon::current_num_threads() < 2 {
        (0..count).for_each(f);
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
            use rayon::prelude::*;
            (0..count).into_par_iter().for_each(&f);
            return;
        }
    };
    let pieces = Pieces { next: AtomicUsize::new(0), count, f: &f };
    let mut job = Job { call: runner(&pieces), data: (&raw const pieces).cast(), panic: None };
    // SAFETY: only the holder of `caller` writes the pointer, and the partner
    // reads it only after READY below (`Partner`).
    unsafe { *p.job.get() = &raw mut job };
    p.state.store(READY, Ordering::SeqCst);
    if p.asleep.load(Ordering::SeqCst) {
        p.thread.unpark();
    }
    let ours = catch_unwind(AssertUnwindSafe(|| pieces.claim()));
    if ours.is_err() {
        // No more pieces for the partner either: the panic goes on below.
        pieces.next.store(count, Ordering::Relaxed);
    }
    // The partner never started: every piece was ours. Else wait for its last one.
    if p.state.compare_exchange(READY, IDLE, Ordering::Acquire, Ordering::Relaxed).is_err() {
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

    /// Each piece's runs, counted: every one must be 1.
    fn counted(count: usize, run: impl FnOnce(&(dyn Fn(usize) + Sync))) -> Vec<usize> {
        let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
        run(&|i| {
            runs[i].fetch_add(1, Ordering::Relaxed);
        });
        runs.iter().map(|r| r.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn every_piece_runs_once_from_any_thread() {
        for count in [0, 1, 2, 3, 8, 100] {
            assert_eq!(counted(count, |f| for_each(count, f)), vec![1; count], "{count} pieces");
            // From inside rayon's pool, and from many threads at once.
            assert_eq!(counted(count, |f| rayon::scope(|_| for_each(count, f))), vec![1; count]);
            let all = counted(count * 8, |f| {
                std::thread::scope(|s| {
                    for t in 0..8 {
                        s.spawn(move || for_each(count, |i| f(t * count + i)));
                    }
                })
            });
            assert_eq!(all, vec![1; count * 8], "{count} pieces from 8 threads");
        }
    }

    #[test]
    fn a_panic_in_any_piece_reaches_the_caller() {
        for bad in [0, 3, 7] {
            let caught = catch_unwind(|| for_each(8, |i| assert_ne!(i, bad, "piece {bad}")));
            assert!(caught.is_err(), "piece {bad}'s panic");
        }
        assert_eq!(counted(8, |f| for_each(8, f)), vec![1; 8], "after the panics");
    }
}
