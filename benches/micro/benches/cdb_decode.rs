//! SCSI command start: `ScsiTarget::start` decodes and checks a CDB (LUN routing, unit
//! attentions, reservations, range) and yields the task's first step, for the commands of
//! the data path (READ(10), WRITE(10) 4 KiB, READ(16) 128 KiB) and a few without I/O.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use scsi::{Command, LogicalUnit, LunConfig, Nexus, ScsiTarget, Step, TargetPort, TaskAttr};

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
    Nexus {
        id: 1,
        initiator_port: "iqn.2026-11.org.example:init,i,0x00023d000001".into(),
        initiator_name: "iqn.2026-11.org.example:init".into(),
        relative_port_id: 1,
    }
}

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

fn start(c: &mut Criterion) {
    let mut t = target();
    let n = nexus();
    // The first command of a nexus reports the power-on unit attention; clear it.
    let tur = cdb(&[0x00]);
    for _ in 0..2 {
        let cmd = Command {
            cdb: &tur,
            data_out: Bytes::new(),
            data_out_too_large: false,
            expected_data_in_len: 0,
            attr: TaskAttr::Simple,
        };
        let _ = t.start(&n, 0, &cmd).poll(None);
    }
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

criterion_group!(benches, start);
criterion_main!(benches);
