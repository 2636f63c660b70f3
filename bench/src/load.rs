//! Driving a FHIR server over HTTP: closed-loop runs at a fixed number of
//! requests in flight, open-loop runs at a fixed rate, HDR histograms.
//!
//! The client runs on one thread (a current-thread tokio runtime), so on a
//! small machine it takes at most one core from the server it measures; a
//! reqwest request costs tens of microseconds of client CPU against the
//! server's hundreds, so one thread keeps 64 requests in flight.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One operation of a scenario: a request (or a read, update and retries).
/// `Ok(retries)` when it succeeded, `Err` with what went wrong.
pub type Op = Rc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Result<u32, String>>>>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Requests in flight (closed loop), or 0 for an open-loop run.
    pub concurrency: usize,
    /// Open loop: the rate asked for, operations a second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_rate: Option<f64>,
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
    /// 412 answers retried (the accept scenario).
    pub retries: u64,
    /// Successful operations a second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first error seen, to tell a failing scenario from a slow one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn summarise(
    h: &Histogram<u64>,
    concurrency: usize,
    target_rate: Option<f64>,
    seconds: f64,
    counts: (u64, u64, u64),
    first_error: Option<String>,
) -> Run {
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Run {
        concurrency,
        target_rate,
        seconds,
        ok: counts.0,
        errors: counts.1,
        retries: counts.2,
        throughput: counts.0 as f64 / seconds.max(1e-9),
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1000.0
        },
        first_error,
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    retries: u64,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, r: &Result<u32, String>) {
        match r {
            Ok(n) => {
                self.ok += 1;
                self.retries += u64::from(*n);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
}

/// `concurrency` workers each run `op` back to back for `warm_up` (not
/// recorded) and then `seconds`. Latency is each operation's own time.
pub async fn closed_loop(op: &Op, concurrency: usize, warm_up: Duration, seconds: f64) -> Run {
    let start = Instant::now();
    let measure_from = start + warm_up;
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut workers = vec![];
    for w in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::task::spawn_local(async move {
            let mut h = histogram();
            let mut tally = Tally::default();
            let mut n = w as u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let r = op(n).await;
                n += concurrency as u64;
                if t >= measure_from {
                    if r.is_ok() {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    tally.add(&r);
                }
            }
            (h, tally)
        }));
    }
    let mut h = histogram();
    let mut total = Tally::default();
    for w in workers {
        if let Ok((wh, t)) = w.await {
            let _ = h.add(&wh);
            total.ok += t.ok;
            total.errors += t.errors;
            total.retries += t.retries;
            if total.first_error.is_none() {
                total.first_error = t.first_error;
            }
        }
    }
    // The last operations may end a little after `end`; count the real span.
    let span = Instant::now().duration_since(measure_from).as_secs_f64();
    summarise(
        &h,
        concurrency,
        None,
        span.max(seconds),
        (total.ok, total.errors, total.retries),
        total.first_error,
    )
}

/// Starts `op` at `rate` a second for `seconds`, whatever is still in
/// flight (at most `cap` at once; past that a start is counted as an
/// error). Latency is measured from when the operation was due, so a
/// server that falls behind shows it (no coordinated omission).
pub async fn open_loop(op: &Op, rate: f64, seconds: f64, cap: usize) -> Run {
    let rate = rate.max(1.0);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * seconds).ceil() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Result<u32, String>)>();
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let start = Instant::now();
    let mut skipped = 0u64;
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        if in_flight.get() >= cap {
            skipped += 1;
            continue;
        }
        in_flight.set(in_flight.get() + 1);
        let (op, tx, in_flight) = (op.clone(), tx.clone(), in_flight.clone());
        tokio::task::spawn_local(async move {
            let r = op(i).await;
            in_flight.set(in_flight.get() - 1);
            let _ = tx.send((due.elapsed().as_micros().max(1) as u64, r));
        });
    }
    drop(tx);
    let mut h = histogram();
    let mut tally = Tally::default();
    while let Some((micros, r)) = rx.recv().await {
        if r.is_ok() {
            let _ = h.record(micros);
        }
        tally.add(&r);
    }
    if skipped > 0 {
        tally.errors += skipped;
        tally
            .first_error
            .get_or_insert_with(|| format!("{skipped} starts skipped: {cap} in flight"));
    }
    let span = start.elapsed().as_secs_f64();
    summarise(
        &h,
        0,
        Some(rate),
        span.max(seconds),
        (tally.ok, tally.errors, tally.retries),
        tally.first_error,
    )
}
