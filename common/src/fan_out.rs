//! A bounded queue from one producer (or a rayon pool) to a few worker threads, that stops at
//! the first error and never hangs: a producer blocked on a full queue is released as soon as
//! the workers are gone, whether they returned, failed or panicked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

/// The workers stopped taking items (one failed, or all are gone): the producer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Runs `produce` on this thread and `consume` on `workers` threads, joined by a queue of
/// `capacity` items. `produce` hands items on with the function it is given, which answers
/// [`Stopped`] once a worker has failed (its error is the result then, not the producer's).
/// A worker that panics makes the result `panicked()`.
pub fn fan_out<T, R, E>(
    workers: usize,
    capacity: usize,
    produce: impl FnOnce(&(dyn Fn(T) -> Result<(), Stopped> + Sync)) -> Result<R, E>,
    consume: impl Fn(T) -> Result<(), E> + Sync,
    panicked: impl FnOnce() -> E,
) -> Result<R, E>
where
    T: Send,
    E: Send,
{
    let (tx, rx) = sync_channel::<T>(capacity);
    // Only the workers hold the receiver: when the last one ends, sends fail at once.
    let rx: Arc<Mutex<Receiver<T>>> = Arc::new(Mutex::new(rx));
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    let (produced, any_panicked) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let rx = Arc::clone(&rx);
                let (stop, first_error, consume) = (&stop, &first_error, &consume);
                scope.spawn(move || loop {
                    let next = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(item) = next else {
                        return;
                    };
                    if stop.load(Ordering::Relaxed) {
                        // Drained so that the producer is never left blocked on a full queue.
                        continue;
                    }
                    if let Err(e) = consume(item) {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        drop(rx);
        let send = |item: T| -> Result<(), Stopped> {
            if stop.load(Ordering::Relaxed) {
                return Err(Stopped);
            }
            tx.send(item).map_err(|_| Stopped)
        };
        let produced = produce(&send);
        drop(tx);
        let any_panicked = handles
            .into_iter()
            .map(|h| h.join().is_err())
            .fold(false, |a, b| a | b);
        (produced, any_panicked)
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    if any_panicked {
        return Err(panicked());
    }
    produced
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_item_is_consumed_once() {
        let sum = AtomicUsize::new(0);
        let r: Result<usize, String> = fan_out(
            3,
            2,
            |send| {
                for i in 1..=1000 {
                    send(i).map_err(|_| "stopped".to_owned())?;
                }
                Ok(7)
            },
            |i| {
                sum.fetch_add(i, Ordering::Relaxed);
                Ok(())
            },
            || "panicked".to_owned(),
        );
        assert_eq!(r, Ok(7));
        assert_eq!(sum.into_inner(), 500_500);
    }

    #[test]
    fn a_worker_error_stops_the_producer_and_is_the_result() {
        let sent = AtomicUsize::new(0);
        let r: Result<(), String> = fan_out(
            2,
            1,
            |send| {
                for i in 0..1_000_000 {
                    if send(i).is_err() {
                        return Err("producer saw the stop".to_owned());
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            },
            |i| {
                if i == 10 {
                    Err(format!("item {i}"))
                } else {
                    Ok(())
                }
            },
            || "panicked".to_owned(),
        );
        assert_eq!(r, Err("item 10".to_owned()));
        assert!(sent.into_inner() < 1_000_000);
    }

    #[test]
    fn panicking_workers_release_a_blocked_producer() {
        let r: Result<(), String> = fan_out(
            2,
            1,
            |send| {
                for i in 0..1_000 {
                    send(i).map_err(|_| "stopped".to_owned())?;
                }
                Ok(())
            },
            |_| -> Result<(), String> { panic!("a worker bug") },
            || "panicked".to_owned(),
        );
        assert_eq!(r, Err("panicked".to_owned()));
    }
}
