//! Concurrent reads of the same key share one backend read.
//!
//! The first Get of a key leads a flight; Gets of that key arriving while
//! it is in flight wait for its result instead of asking memcached again.
//! A write to the key ends joining ([`Flights::forget`]): a Get that starts
//! after a write was acknowledged never joins a read sent before it, so
//! single-flight cannot turn a fresh read into a stale one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::key::Key;

type Waiters<V> = Mutex<Vec<oneshot::Sender<V>>>;

/// The reads in flight, by key.
#[derive(Debug)]
pub struct Flights<V> {
    map: Mutex<HashMap<Key, Arc<Waiters<V>>>>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Flights<V> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Waiters<V>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` for `key`, or joins the read already in flight for it.
    /// Returns the value and whether it came from another caller's read.
    pub async fn run<F, Fut>(&self, key: &Key, read: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let ours = {
            let mut map = self.map();
            match map.get(key) {
                Some(flight) => {
                    let (tx, rx) = oneshot::channel();
                    lock(flight).push(tx);
                    Err(rx)
                }
                None => {
                    let flight = Arc::new(Mutex::new(Vec::new()));
                    map.insert(key.clone(), flight.clone());
                    Ok(flight)
                }
            }
        };
        let flight = match ours {
            Ok(flight) => Leader {
                flights: self,
                key,
                flight,
                landed: false,
            },
            Err(rx) => {
                return match rx.await {
                    Ok(v) => (v, true),
                    // The leader was cancelled before it finished: read alone.
                    Err(_) => (read().await, false),
                };
            }
        };
        let v = read().await;
        for waiter in flight.land() {
            let _ = waiter.send(v.clone());
        }
        (v, false)
    }

    /// Lets no later read join the one in flight for `key` (called before
    /// a write to it).
    pub fn forget(&self, key: &Key) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(key);
        }
    }

    /// Keys with a read in flight.
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }
}

fn lock<V>(w: &Waiters<V>) -> std::sync::MutexGuard<'_, Vec<oneshot::Sender<V>>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The leader's claim on a key; dropping it (cancelled mid-read) frees the
/// key, and the waiters then read alone.
struct Leader<'a, V> {
    flights: &'a Flights<V>,
    key: &'a Key,
    flight: Arc<Waiters<V>>,
    /// The flight ended normally: nothing left for `drop` to do.
    landed: bool,
}

impl<V> Leader<'_, V> {
    /// Ends the flight, returning who waits for its result.
    fn land(mut self) -> Vec<oneshot::Sender<V>> {
        self.landed = true;
        self.take()
    }

    fn take(&self) -> Vec<oneshot::Sender<V>> {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only this leader's own flight: after `forget`, a newer one may
        // hold the key and must stay.
        if map
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            map.remove(self.key);
        }
        drop(map);
        std::mem::take(&mut *lock(&self.flight))
    }
}

impl<V> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        if !self.landed {
            // Senders dropped here tell the waiters to read alone.
            drop(self.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn key(k: &str) -> Key {
        Key::parse(k).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_of_a_key_share_one() {
        let flights = Arc::new(Flights::<u32>::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flights, reads, mut gate) = (flights.clone(), reads.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run(&key("k"), || async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        7
                    })
                    .await
            }));
        }
        // Every task has joined once ten are accounted for: one leader and
        // nine waiters.
        while flights.map().get(&key("k")).map_or(0, |f| lock(f).len()) < 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(true).unwrap();
        let mut joined = 0;
        for t in tasks {
            let (v, j) = t.await.unwrap();
            assert_eq!(v, 7);
            joined += usize::from(j);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 9);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_after_forget_does_not_join() {
        let flights = Arc::new(Flights::<u32>::default());
        let (release, gate) = tokio::sync::watch::channel(false);
        let f = flights.clone();
        let mut g = gate.clone();
        let old = tokio::spawn(async move {
            f.run(&key("k"), || async move {
                let _ = g.wait_for(|open| *open).await;
                1
            })
            .await
        });
        while flights.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        flights.forget(&key("k")); // a write happened
        let (v, joined) = flights.run(&key("k"), || async { 2 }).await;
        assert_eq!((v, joined), (2, false));
        release.send(true).unwrap();
        assert_eq!(old.await.unwrap(), (1, false));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_of_a_cancelled_leader_read_alone() {
        let flights = Arc::new(Flights::<u32>::default());
        let f = flights.clone();
        let leader =
            tokio::spawn(async move { f.run(&key("k"), std::future::pending::<u32>).await });
        while flights.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let f = flights.clone();
        let waiter = tokio::spawn(async move { f.run(&key("k"), || async { 3 }).await });
        while flights.map().get(&key("k")).map_or(0, |f| lock(f).len()) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        leader.abort();
        assert_eq!(waiter.await.unwrap(), (3, false));
    }
}
