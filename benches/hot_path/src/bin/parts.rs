//! The cost of the building blocks the hot paths are made of, each alone in a loop (thread CPU
//! time per operation, median of 9 runs of 2,000,000): what a request copy, the attempt count in
//! a response's extensions (rule R7) or a clock read cost on this machine, next to what the
//! static header itself costs (a `HeaderValue` clone). Prints `PART {json}` lines for
//! `scripts/bench.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../cpu.rs"]
#[allow(dead_code)] // `process_cpu` is for B2
mod cpu;

use cpu::thread_cpu;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn part(name: &str, mut f: impl FnMut()) {
    const N: u32 = 2_000_000;
    for _ in 0..N / 10 {
        f();
    }
    let mut runs: Vec<f64> = (0..9)
        .map(|_| {
            let start = thread_cpu();
            for _ in 0..N {
                f();
            }
            (thread_cpu() - start).as_nanos() as f64 / f64::from(N)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("PART {{\"part\":\"{name}\",\"ns\":{:.2}}}", runs[4]);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let arc = Arc::new(5u64);
    let counter = AtomicU64::new(0);
    let swap = arc_swap::ArcSwap::from_pointee(5u64);
    let mut value = http::HeaderValue::from_str(&"a".repeat(1500)).unwrap();
    value.set_sensitive(true);
    let uri: http::Uri = "https://api.example.com/v1/items?page=1".parse().unwrap();
    let request = reqwest::Request::new(
        http::Method::GET,
        "http://127.0.0.1:8080/api/data".parse().unwrap(),
    );

    part("a loop iteration", || {
        black_box(1);
    });
    part(
        "HeaderValue clone + drop (the static header's own work)",
        || {
            drop(black_box(black_box(&value).clone()));
        },
    );
    part("Arc clone + drop", || {
        drop(black_box(black_box(&arc).clone()));
    });
    part("atomic fetch_add", || {
        black_box(&counter).fetch_add(1, Ordering::Relaxed);
    });
    part("ArcSwap load", || {
        black_box(**black_box(&swap).load());
    });
    part("tokio::time::Instant::now (a clock read)", || {
        black_box(tokio::time::Instant::now());
    });
    part("http::Uri clone + drop (in every request copy)", || {
        drop(black_box(black_box(&uri).clone()));
    });
    part(
        "attempt count into empty response extensions + drop (R7; now retried responses only)",
        || {
            let mut ext = http::Extensions::new();
            ext.insert(black_box(1u32));
            drop(black_box(ext));
        },
    );
    part(
        "reqwest::Request::try_clone + drop (B2's one request copy per call)",
        || {
            drop(black_box(black_box(&request).try_clone()));
        },
    );
}
