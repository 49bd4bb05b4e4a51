//! What each command doing I/O pays to enter and leave its LUN's gates, uncontended: the
//! `DrainGate` held shared (the DRBD drain), alone as before session 24, then with the
//! `RmwGate` that keeps I/O off a running COMPARE AND WRITE; and the `RmwGate` while a
//! COMPARE AND WRITE elsewhere on the LUN is registered (the command then checks the
//! registry). Both gates complete at once here, so each future is polled once.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use gateway::net::drain_gate::DrainGate;
use gateway::net::rmw_gate::RmwGate;

const SPAN: std::ops::Range<u64> = 4096..8192;

fn gates(c: &mut Criterion) {
    let drain = DrainGate::default();
    let rmw = RmwGate::default();
    let mut g = c.benchmark_group("lun-gates");
    g.throughput(Throughput::Elements(1));
    g.bench_function("drain-gate-shared", |b| {
        b.iter(|| black_box(drain.shared().now_or_never().unwrap()))
    });
    g.bench_function("drain-gate-and-rmw-gate", |b| {
        b.iter(|| {
            let shared = drain.shared().now_or_never().unwrap();
            let span = rmw.enter(Some(SPAN), false).now_or_never().unwrap();
            black_box((shared, span))
        })
    });
    let elsewhere = rmw.enter(Some(1 << 30..(1 << 30) + 512), true);
    let _registered = elsewhere.now_or_never().unwrap();
    g.bench_function("rmw-gate-beside-a-registered-span", |b| {
        b.iter(|| black_box(rmw.enter(Some(SPAN), false).now_or_never().unwrap()))
    });
    g.finish();
}

criterion_group!(benches, gates);
criterion_main!(benches);
