//! `ivm-bench --soak SECONDS`: a mixed hostile load for a given time, to see that the host's
//! memory stays where it was. Each round runs, at once: tenants awaiting async host
//! functions, scripts spinning into their timeouts, isolates going over their memory limits,
//! hostile data (a cyclic error, a shared object copied out, a repeated string, a huge
//! BigInt), JavaScript left behind by a completion, and a few of these in worker processes.
//! After a warm-up of a tenth of the time (at least a round) the host's RSS is read; at the end
//! again.

use std::time::{Duration, Instant};

use ivm::{Callback, Error, EvalOptions, Isolate, IsolateOptions, Isolation, Value};

use super::{await_lookups, block_on, rss_bytes, tenants};

pub fn soak(seconds: u64) -> Result<serde_json::Value, Error> {
    let total = Duration::from_secs(seconds);
    let started = Instant::now();
    let warm_up = total / 10;
    let mut rounds = 0u64;
    let mut rss_start = None;
    while started.elapsed() < total || rss_start.is_none() {
        round(rounds)?;
        rounds += 1;
        if rss_start.is_none() && started.elapsed() >= warm_up {
            rss_start = Some((rss_bytes(), rounds));
        }
    }
    let (rss_start, warm_rounds) = rss_start.expect("set after the warm-up");
    let rss_end = rss_bytes();
    let mb = |bytes: u64| bytes as f64 / 1e6;
    Ok(serde_json::json!({
        "soak_seconds": started.elapsed().as_secs_f64(),
        "rounds": rounds,
        "warm_up_rounds": warm_rounds,
        "rss_start_MB": mb(rss_start),
        "rss_end_MB": mb(rss_end),
        "rss_growth_pct": (rss_end as f64 - rss_start as f64) / rss_start as f64 * 100.0,
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
    if n % 4 == 0 {
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
