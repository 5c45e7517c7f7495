//! Load patterns. Closed loop: C workers, each sending its next request when the last one
//! ends, so C are in flight until the level's request count or duration is used up. Open
//! loop: requests sent at Poisson arrival times (exponential gaps from a seeded RNG)
//! whatever the server's state, so a slow server builds a queue instead of slowing the
//! load down.
//!
//! Both take `send(i)`, the i-th request of the level, and return every outcome with the
//! level's wall time (first send to last finish). Everything runs on the caller's task:
//! no spawning, so one current-thread runtime drives the whole run.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// When a level stops sending: after `requests`, after `duration`, or at whichever comes
/// first. Requests in flight at the deadline still finish and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub requests: Option<usize>,
    pub duration: Option<Duration>,
}

/// Arrival times (since the level's start) of a Poisson process of `rate` per second: up to
/// `limit.requests` arrivals, none at or past `limit.duration`. One of the two must be set.
pub fn poisson_schedule(rate: f64, limit: Limit, seed: u64) -> Vec<Duration> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut at = 0f64;
    let mut times = Vec::new();
    let cap = limit.requests.unwrap_or(usize::MAX);
    let end = limit.duration.map(|d| d.as_secs_f64());
    if end.is_none() && limit.requests.is_none() || !(rate > 0.0 && rate.is_finite()) {
        return times;
    }
    while times.len() < cap {
        // 1 − U is in (0, 1]: its log is finite.
        let u: f64 = 1.0 - rng.random::<f64>();
        at += -u.ln() / rate;
        if end.is_some_and(|e| at >= e) {
            break;
        }
        times.push(Duration::from_secs_f64(at));
    }
    times
}

/// Closed loop at concurrency `c`.
pub async fn closed_loop<F, Fut, T>(c: usize, limit: Limit, send: F) -> (Vec<T>, f64)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T>,
{
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let deadline = limit.duration.map(|d| started + d);
    let worker = || async {
        let mut out = Vec::new();
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if limit.requests.is_some_and(|n| i >= n) {
                break;
            }
            out.push((i, send(i).await));
        }
        out
    };
    let mut all: Vec<(usize, T)> = join_all((0..c.max(1)).map(|_| worker()))
        .await
        .into_iter()
        .flatten()
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    all.sort_by_key(|(i, _)| *i);
    (all.into_iter().map(|(_, o)| o).collect(), seconds)
}

/// Open loop over `schedule` (from [`poisson_schedule`]).
pub async fn open_loop<F, Fut, T>(schedule: &[Duration], send: F) -> (Vec<T>, f64)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T>,
{
    let started = tokio::time::Instant::now();
    let send = &send;
    let requests = schedule.iter().enumerate().map(|(i, at)| async move {
        tokio::time::sleep_until(started + *at).await;
        send(i).await
    });
    let out = join_all(requests).await;
    (out, started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_average_one_over_the_rate() {
        let limit = Limit {
            requests: Some(20_000),
            duration: None,
        };
        let times = poisson_schedule(4.0, limit, 7);
        assert_eq!(times.len(), 20_000);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let mean_gap = times[times.len() - 1].as_secs_f64() / times.len() as f64;
        assert!((mean_gap - 0.25).abs() < 0.01, "mean gap {mean_gap}");
        // Exponential gaps: the standard deviation equals the mean.
        let gaps: Vec<f64> = std::iter::once(times[0].as_secs_f64())
            .chain(times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()))
            .collect();
        let var = gaps.iter().map(|g| (g - mean_gap).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((var.sqrt() - 0.25).abs() < 0.015, "sd {}", var.sqrt());
        // Seeded: the same seed, the same schedule; another seed, another.
        assert_eq!(poisson_schedule(4.0, limit, 7), times);
        assert_ne!(poisson_schedule(4.0, limit, 8), times);
    }

    #[test]
    fn a_duration_bounds_the_schedule() {
        let limit = Limit {
            requests: None,
            duration: Some(Duration::from_secs(100)),
        };
        let times = poisson_schedule(2.0, limit, 1);
        assert!(times.iter().all(|t| t.as_secs_f64() < 100.0));
        assert!((150..250).contains(&times.len()), "{}", times.len());
        let both = Limit {
            requests: Some(10),
            ..limit
        };
        assert_eq!(poisson_schedule(2.0, both, 1).len(), 10);
        let none = Limit {
            requests: None,
            duration: None,
        };
        assert!(poisson_schedule(2.0, none, 1).is_empty());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_closed_loop_keeps_c_in_flight_and_sends_each_index_once() {
        use std::sync::atomic::AtomicUsize;
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let limit = Limit {
            requests: Some(23),
            duration: None,
        };
        let (out, _) = runtime().block_on(closed_loop(4, limit, |i| {
            let (in_flight, peak) = (&in_flight, &peak);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1 + (i % 3) as u64)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                i
            }
        }));
        assert_eq!(out, (0..23).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn an_open_loop_sends_on_schedule() {
        let schedule: Vec<Duration> = [0, 20, 40].map(Duration::from_millis).to_vec();
        let started = Instant::now();
        let (out, seconds) =
            runtime().block_on(open_loop(
                &schedule,
                |i| async move { (i, started.elapsed()) },
            ));
        assert_eq!(out.len(), 3);
        assert!(out[2].1 >= Duration::from_millis(40));
        assert!(seconds >= 0.04);
    }
}
