//! Guests side by side. Under TCG a guest's one vCPU runs on one host
//! thread, so a machine of this kind (2 cores) runs two guests in about the
//! time of one: the QEMU stages of `cargo xtask test` were most of a CI
//! run. Each stage resolves its kernels first (downloads and builds share
//! the cache and apt's lock), boots its guests here, then scores the
//! outcomes in their own order, so PASS/FAIL lines and counts read as a
//! sequential run's would.
//!
//! `DIO_TRACE_GUESTS=N` sets how many guests run at once (1: one after
//! the other); the default is the number of CPUs, at most 4.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many guests run at once.
pub fn guests() -> usize {
    guests_from(
        std::env::var("DIO_TRACE_GUESTS").ok().as_deref(),
        std::thread::available_parallelism().map_or(1, usize::from),
    )
}

fn guests_from(var: Option<&str>, cpus: usize) -> usize {
    match var.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => cpus.clamp(1, 4),
    }
}

/// `f` of each item, on up to [`guests`] threads; the results in the
/// items' order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_on(guests(), items, f)
}

fn map_on<T: Sync, R: Send>(threads: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was taken by a thread")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u64> = (0..9).collect();
        // The first items take longest: they finish last.
        let out = map_on(3, &items, |i| {
            std::thread::sleep(Duration::from_millis(30 - 3 * i));
            i * 10
        });
        assert_eq!(out, (0..9).map(|i| i * 10).collect::<Vec<_>>());
    }

    /// Never more than the threads asked for at once, and that many.
    #[test]
    fn items_run_side_by_side() {
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        map_on(2, &[(); 6], |_| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            now.fetch_sub(1, Ordering::SeqCst);
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert!(map_on(2, &[] as &[u8], |_| 0).is_empty());
    }

    #[test]
    fn the_guest_count_comes_from_the_environment_or_the_cpus() {
        assert_eq!(guests_from(None, 2), 2);
        assert_eq!(guests_from(None, 64), 4);
        assert_eq!(guests_from(Some("1"), 2), 1);
        assert_eq!(guests_from(Some("3"), 2), 3);
        assert_eq!(guests_from(Some("0"), 2), 2);
        assert_eq!(guests_from(Some("many"), 2), 2);
    }
}
