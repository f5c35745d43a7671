//! `ivm-bench --soak SECONDS`: a mixed hostile load for a given time, to see that the host's
//! memory stays where it was. Each round runs, at once: tenants awaiting async host
//! functions, scripts spinning into their timeouts, isolates going over their memory limits,
//! hostile data (a cyclic error, a shared object copied out, a repeated string, a huge
//! BigInt), JavaScript left behind by a completion, and a few of these in worker processes.
//!
//! The host's RSS is read after every round, once the round's isolates have had a moment to be
//! freed (disposed isolates are freed on a background thread, up to 8 waiting, each up to its
//! 16 MB limit: a single reading right after a round can be ~100 MB off). The first tenth of
//! the rounds (at least one) is warm-up; the start figure is the median of the next tenth's
//! readings, the end figure the median of the last tenth's.

use std::time::{Duration, Instant};

use ivm::{Callback, Error, EvalOptions, Isolate, IsolateOptions, Isolation, Value};

use super::{await_lookups, block_on, rss_bytes, tenants};

/// How long after a round its RSS is read.
const SETTLE: Duration = Duration::from_millis(100);

pub fn soak(seconds: u64) -> Result<serde_json::Value, Error> {
    let total = Duration::from_secs(seconds);
    let started = Instant::now();
    // The RSS after every round.
    let mut readings: Vec<u64> = Vec::new();
    while started.elapsed() < total || readings.len() < 10 {
        round(readings.len() as u64)?;
        std::thread::sleep(SETTLE);
        readings.push(rss_bytes());
    }
    // Rounds take about the same time: tenths of the readings are tenths of the time.
    let tenth = readings.len() / 10;
    let median = |window: &[u64]| {
        let mut window = window.to_vec();
        window.sort_unstable();
        window[window.len() / 2]
    };
    let (rss_start, rss_end) = (median(&readings[tenth..2 * tenth]), median(&readings[readings.len() - tenth..]));
    let after_warm_up = &readings[tenth..];
    let mb = |bytes: u64| bytes as f64 / 1e6;
    // The trend: the median of each tenth.
    let by_tenth: Vec<f64> = readings.chunks(tenth.max(1)).take(10).map(|chunk| mb(median(chunk))).collect();
    Ok(serde_json::json!({
        "soak_seconds": started.elapsed().as_secs_f64(),
        "rounds": readings.len(),
        "rss_start_MB": mb(rss_start),
        "rss_end_MB": mb(rss_end),
        "rss_growth_pct": (rss_end as f64 - rss_start as f64) / rss_start as f64 * 100.0,
        "rss_low_MB": mb(after_warm_up.iter().copied().min().unwrap_or(0)),
        "rss_high_MB": mb(after_warm_up.iter().copied().max().unwrap_or(0)),
        "rss_by_tenth_MB": by_tenth,
    }))
}

/// What every case expects: it ran, or it failed the way it should.
fn expect(name: &str, result: Result<(), Error>, ok: impl Fn(&Error) -> bool) {
    if let Err(e) = result {
        assert!(ok(&e), "soak: {name} failed unexpectedly: {e:?}");
    }
}

fn round(n: u64) -> Result<(), Error> {
    let small = || IsolateOptions::default().memory_limit(16);
    // Tenants awaiting async host functions, all in flight together.
    let tenants = tenants(50, small())?;
    let sums = await_lookups(&tenants, 20);
    // Beside them: runaways, memory hogs, hostile data.
    let hostile = [
        ("runaway", "for (;;) {}"),
        ("object growth", "const a = []; for (;;) a.push({ n: a.length })"),
        ("string growth", "let s = 'x'; for (;;) s += s"),
        ("cyclic error", "const e = new Error('x'.repeat(1 << 16)); e.cause = e; e.errors = Array(100).fill(e); throw e"),
        ("shared object", "const o = { s: 'x'.repeat(1 << 20) }; Array(500).fill(o)"),
        ("repeated string", "Array(2000).fill('x'.repeat(1 << 20))"),
        ("huge bigint", "1n << 10000000n"),
    ];
    let options = EvalOptions::default().copy().timeout(Duration::from_millis(200));
    let runs: Vec<_> = hostile
        .iter()
        .map(|(name, code)| {
            let context = Isolate::new(small())?.create_context()?;
            let run = context.eval_async::<Value>(*code, options.clone());
            Ok((*name, context, run))
        })
        .collect::<Result<_, Error>>()?;
    for (name, _context, run) in runs {
        expect(name, block_on(run).map(drop), |e| {
            matches!(e, Error::Timeout { .. } | Error::MemoryLimit | Error::Conversion(_) | Error::Exception(_))
        });
    }
    // JavaScript left behind by a completion, under the default timeout.
    let left = Isolate::new(small().default_timeout(Some(Duration::from_millis(100))))?.create_context()?;
    left.set_global("tick", Callback::new_async(|(): ()| async { Ok(()) }))?;
    left.eval::<()>("tick().then(() => { for (;;) {} })")?;
    // A few in worker processes (every fourth round: starting workers takes time).
    if n.is_multiple_of(4) {
        let context = Isolate::new(small().isolation(Isolation::Process))?.create_context()?;
        expect("process runaway", context.eval_with::<()>("for (;;) {}", &EvalOptions::default().timeout(Duration::from_millis(50))), |e| {
            matches!(e, Error::Timeout { .. })
        });
        expect("process copy", context.eval_with::<Value>("Array(2000).fill('x'.repeat(1 << 20))", &EvalOptions::default().copy()).map(drop), |e| {
            matches!(e, Error::Conversion(_))
        });
    }
    for sum in sums {
        assert_eq!(block_on(sum)?, 380.0, "soak: a tenant's sum");
    }
    for tenant in &tenants {
        tenant.isolate().dispose()?;
    }
    Ok(())
}
