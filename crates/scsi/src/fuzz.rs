//! Entry point for fuzzers: run one CDB with data-out against a fresh, small LUN and
//! drive it to completion with synthetic completions (zero-filled reads, everything
//! else succeeding). It must never panic or hang. When the lock-free fast path
//! (`fast.rs`) takes the command too, the two must agree: same block requests, same
//! response.

use bytes::Bytes;

use crate::fast::Admission;
use crate::io::{BlockRequest, Extent, IoCompletion, Step};
use crate::lun::LogicalUnit;
use crate::response::Response;
use crate::task::Task;
use crate::types::{Command, LunConfig, Nexus, TargetPort};

/// Most I/O steps a fuzzed command may take (bounds WRITE SAME expansion).
const MAX_STEPS: usize = 4096;

/// A LUN suitable for fuzzing and tests: 64 MiB of 512-byte blocks.
pub(crate) fn fuzz_lun() -> LogicalUnit {
    LogicalUnit::new(
        LunConfig {
            num_blocks: 131_072,
            serial: "fuzz0001".into(),
            ..LunConfig::default()
        },
        TargetPort {
            target_name: "iqn.2024-01.test:fuzz".into(),
            relative_port_id: 1,
            port_group: 1,
        },
    )
}

/// Synthetic completion for a request.
pub(crate) fn synthetic(req: &BlockRequest) -> IoCompletion {
    match req {
        BlockRequest::Read { len, .. } => IoCompletion::Data(Bytes::from(vec![0u8; *len as usize])),
        BlockRequest::MappingStatus { offset, len } => IoCompletion::Mapping(vec![Extent {
            offset: *offset,
            len: *len,
            mapped: true,
        }]),
        _ => IoCompletion::Done,
    }
}

/// Run `cdb` with data-out `data` against a fresh LUN, feeding synthetic completions.
pub fn fuzz_cdb(cdb: &[u8], data: &[u8]) {
    let mut lun = fuzz_lun();
    let nexus = Nexus {
        id: 1,
        initiator_port: "iqn.2024-01.test:init,i,0x000000000001".into(),
        initiator_name: "iqn.2024-01.test:init".into(),
        relative_port_id: 1,
    };
    // Consume the power-on unit attention so the CDB itself is exercised.
    let mut t = lun.start(&nexus, &Command::new(&[0u8; 6]));
    let _ = t.poll(None);
    let admission = Admission::default();
    lun.admit(nexus.id, &admission);
    let cmd = Command::with_data(cdb, Bytes::copy_from_slice(data));
    let fast = lun.fast_path().try_start(&admission, &cmd).map(drive);
    let locked = drive(lun.start(&nexus, &cmd));
    if let Some(fast) = fast {
        assert_eq!(fast, locked, "fast and locked starts differ for {cdb:02x?}");
    }
}

/// Drives `task` with synthetic completions: the requests it made and its response
/// (`None` if it did not finish within [`MAX_STEPS`]).
fn drive(mut task: Task) -> (Vec<BlockRequest>, Option<Response>) {
    let mut requests = Vec::new();
    let mut step = task.poll(None);
    for _ in 0..MAX_STEPS {
        match step {
            Step::Done(r) => return (requests, Some(r)),
            Step::Io(req) => {
                step = task.poll(Some(synthetic(&req)));
                requests.push(req);
            }
        }
    }
    (requests, None)
}
