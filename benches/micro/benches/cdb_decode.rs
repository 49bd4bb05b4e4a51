//! SCSI command start: `ScsiTarget::start` decodes and checks a CDB (LUN routing, unit
//! attentions, reservations, range) and yields the task's first step, for the commands of
//! the data path (READ(10), WRITE(10) 4 KiB, READ(16) 128 KiB) and a few without I/O.
//!
//! `scsi-start-shared`: a 4 KiB READ(10) started the way the gateway starts it, by one
//! thread or by two at once (wall time per start of each thread): under the target's
//! `Mutex`, which every connection of a target shares, or from the LUN's lock-free
//! `FastPath` with the nexus's `Admission`. Two threads on a lock they share bounce its
//! cache line; on the fast path they only read shared state.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use scsi::{
    Admission, Command, FastPath, LogicalUnit, LunConfig, Nexus, ScsiTarget, Step, TargetPort,
    TaskAttr,
};

fn target() -> ScsiTarget {
    let cfg = LunConfig {
        num_blocks: 1 << 21,
        serial: "SN0001".into(),
        naa: [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        max_transfer_blocks: 16384,
        ..LunConfig::default()
    };
    let port = TargetPort {
        target_name: "iqn.2026-11.org.example:bench".into(),
        relative_port_id: 1,
        port_group: 1,
    };
    ScsiTarget::new(vec![(0, LogicalUnit::new(cfg, port))])
}

fn nexus() -> Nexus {
    nexus_n(1)
}

fn nexus_n(id: u64) -> Nexus {
    Nexus {
        id,
        initiator_port: format!("iqn.2026-11.org.example:init,i,0x00023d00000{id}"),
        initiator_name: "iqn.2026-11.org.example:init".into(),
        relative_port_id: 1,
    }
}

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

/// The first command of a nexus reports the power-on unit attention: send two TEST UNIT
/// READYs so the commands measured are not the ones that report it.
fn clear_power_on(t: &mut ScsiTarget, n: &Nexus) {
    let tur = cdb(&[0x00]);
    for _ in 0..2 {
        let cmd = Command {
            cdb: &tur,
            data_out: Bytes::new(),
            data_out_too_large: false,
            expected_data_in_len: 0,
            attr: TaskAttr::Simple,
        };
        let _ = t.start(n, 0, &cmd).poll(None);
    }
}

fn start(c: &mut Criterion) {
    let mut t = target();
    let n = nexus();
    clear_power_on(&mut t, &n);
    let tur = cdb(&[0x00]);
    let write_data = Bytes::from(vec![0u8; 4096]);
    let cases: Vec<(&str, [u8; 16], Bytes, u32)> = vec![
        (
            "read10-4k",
            cdb(&[0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]),
            Bytes::new(),
            4096,
        ),
        (
            "write10-4k",
            cdb(&[0x2a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]),
            write_data,
            0,
        ),
        (
            "read16-128k",
            cdb(&[0x88, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0, 0]),
            Bytes::new(),
            128 * 1024,
        ),
        ("test-unit-ready", tur, Bytes::new(), 0),
        ("inquiry", cdb(&[0x12, 0, 0, 0, 0xff, 0]), Bytes::new(), 255),
        (
            "read-capacity16",
            cdb(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]),
            Bytes::new(),
            32,
        ),
    ];
    let mut g = c.benchmark_group("scsi-start");
    g.throughput(Throughput::Elements(1));
    for (name, c_bytes, data, exp_in) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let cmd = Command {
                    cdb: black_box(&c_bytes),
                    data_out: data.clone(),
                    data_out_too_large: false,
                    expected_data_in_len: exp_in,
                    attr: TaskAttr::Simple,
                };
                let mut task = t.start(&n, 0, &cmd);
                match task.poll(None) {
                    Step::Io(req) => {
                        black_box(req);
                    }
                    Step::Done(resp) => {
                        black_box(resp);
                    }
                }
            })
        });
    }
    g.finish();
}

/// One thread's way of starting commands in `shared`.
#[derive(Clone, Copy)]
enum Way {
    Locked,
    Fast,
}

/// Runs `iters` READ(10) starts on each of `threads` threads at once; the wall time of
/// the slowest thread.
fn run_shared(
    target: &Arc<Mutex<ScsiTarget>>,
    fast: &Arc<FastPath>,
    admissions: &[Arc<Admission>],
    way: Way,
    threads: usize,
    iters: u64,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (target, fast, adm, barrier) = (
                target.clone(),
                fast.clone(),
                admissions[i].clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let n = nexus_n(i as u64 + 1);
                let read = cdb(&[0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]);
                barrier.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    let cmd = Command {
                        cdb: black_box(&read),
                        data_out: Bytes::new(),
                        data_out_too_large: false,
                        expected_data_in_len: 4096,
                        attr: TaskAttr::Simple,
                    };
                    let task = match way {
                        Way::Fast => fast.try_start(&adm, &cmd),
                        Way::Locked => None,
                    };
                    let mut task = task.unwrap_or_else(|| {
                        let mut t = target.lock().unwrap();
                        let task = t.start(&n, 0, &cmd);
                        t.admit(&n, 0, &adm);
                        task
                    });
                    black_box(task.poll(None));
                }
                t0.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or_default()
}

fn shared(c: &mut Criterion) {
    let t = target();
    let fast = t.lun(0).map(LogicalUnit::fast_path).unwrap();
    let target = Arc::new(Mutex::new(t));
    let admissions: Vec<Arc<Admission>> = (0..2).map(|_| Arc::new(Admission::default())).collect();
    // Both nexuses report their power-on attention first (each one's first command moves
    // the sequence on); then both are admitted.
    let mut t = target.lock().unwrap();
    for i in 0..admissions.len() {
        clear_power_on(&mut t, &nexus_n(i as u64 + 1));
    }
    for (i, adm) in admissions.iter().enumerate() {
        t.admit(&nexus_n(i as u64 + 1), 0, adm);
    }
    drop(t);
    let mut g = c.benchmark_group("scsi-start-shared");
    g.throughput(Throughput::Elements(1));
    for (name, way, threads) in [
        ("locked-1-thread", Way::Locked, 1),
        ("locked-2-threads", Way::Locked, 2),
        ("fast-1-thread", Way::Fast, 1),
        ("fast-2-threads", Way::Fast, 2),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| run_shared(&target, &fast, &admissions, way, threads, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, start, shared);
criterion_main!(benches);
