//! One scrape: reads every metric (the LUN shards, the gateway-wide atomics, the session
//! registry, the data budget, the buffer pool's held bytes and live buffers, the pauses of
//! inline buffered writes, each LUN's serving state) into the text format. Runs on the
//! control runtime when `/metrics` is fetched; it takes the session registry's lock once and
//! each LUN slot's read lock, never anything a command holds for long.

use std::sync::Arc;

use super::lun::Counter;
use super::text::{Kind, TextWriter};
use super::LoginResult;
use crate::net::exec::LunBackend;
use crate::net::ServerContext;

const LUN_COUNTERS: [(&str, Counter, &str); 11] = [
    (
        "iscsi_gateway_lun_commands_total",
        Counter::Commands,
        "SCSI commands executed on the LUN, all kinds.",
    ),
    (
        "iscsi_gateway_lun_read_commands_total",
        Counter::ReadCommands,
        "READ(6/10/12/16) commands.",
    ),
    (
        "iscsi_gateway_lun_read_bytes_total",
        Counter::ReadBytes,
        "Bytes returned by READ commands that ended GOOD.",
    ),
    (
        "iscsi_gateway_lun_write_commands_total",
        Counter::WriteCommands,
        "WRITE and WRITE AND VERIFY (6/10/12/16) commands.",
    ),
    (
        "iscsi_gateway_lun_write_bytes_total",
        Counter::WriteBytes,
        "Bytes written by WRITE commands that ended GOOD.",
    ),
    (
        "iscsi_gateway_lun_flush_commands_total",
        Counter::Flushes,
        "SYNCHRONIZE CACHE(10/16) commands.",
    ),
    (
        "iscsi_gateway_lun_unmap_commands_total",
        Counter::Unmaps,
        "UNMAP commands.",
    ),
    (
        "iscsi_gateway_lun_write_same_commands_total",
        Counter::WriteSames,
        "WRITE SAME(10/16) commands.",
    ),
    (
        "iscsi_gateway_lun_check_conditions_total",
        Counter::CheckConditions,
        "Commands that ended with CHECK CONDITION.",
    ),
    (
        "iscsi_gateway_lun_io_errors_total",
        Counter::IoErrors,
        "Block I/O operations the backing device failed.",
    ),
    (
        "iscsi_gateway_lun_locked_starts_total",
        Counter::LockedStarts,
        "Commands started under the target's lock; the commands that access the medium (READ, WRITE, VERIFY, SYNCHRONIZE CACHE, WRITE SAME, UNMAP, COMPARE AND WRITE and their kin) skip it while no unit attention or reservation conflict is in play.",
    ),
];

/// The whole exposition text for `ctx`.
pub fn render(ctx: &ServerContext) -> String {
    let mut luns: Vec<(String, u64, Arc<LunBackend>)> = ctx
        .targets
        .all()
        .flat_map(|t| {
            t.backends
                .iter()
                .map(|(lun, b)| (t.name.clone(), *lun, b.clone()))
        })
        .collect();
    luns.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let luns: Vec<(String, String, Arc<LunBackend>)> = luns
        .into_iter()
        .map(|(t, lun, b)| (t, lun.to_string(), b))
        .collect();
    let mut w = TextWriter::default();

    for (name, counter, help) in LUN_COUNTERS {
        w.family(name, Kind::Counter, help);
        for (target, lun, b) in &luns {
            let labels = [("target", target.as_str()), ("lun", lun.as_str())];
            w.sample(name, &labels, b.metrics.total(counter));
        }
    }
    let served = "iscsi_gateway_lun_served";
    w.family(
        served,
        Kind::Gauge,
        "1 while the LUN's device is open and served, 0 while not (DRBD not writable here).",
    );
    for (target, lun, b) in &luns {
        let labels = [("target", target.as_str()), ("lun", lun.as_str())];
        w.sample(served, &labels, u64::from(b.slot.is_serving()));
    }
    for (name, write, help) in [
        (
            "iscsi_gateway_lun_read_latency_seconds",
            false,
            "Time from start to response of READ commands.",
        ),
        (
            "iscsi_gateway_lun_write_latency_seconds",
            true,
            "Time from start to response of WRITE commands.",
        ),
    ] {
        w.family(name, Kind::Histogram, help);
        for (target, lun, b) in &luns {
            let labels = [("target", target.as_str()), ("lun", lun.as_str())];
            w.histogram(name, &labels, &b.metrics.latency(write));
        }
    }

    let m = &ctx.metrics;
    w.family(
        "iscsi_gateway_sessions",
        Kind::Gauge,
        "Normal sessions in full feature phase.",
    );
    w.sample(
        "iscsi_gateway_sessions",
        &[],
        ctx.registry.session_count() as u64,
    );
    w.family(
        "iscsi_gateway_connections",
        Kind::Gauge,
        "TCP connections being served (logging in, discovery or normal sessions).",
    );
    w.sample("iscsi_gateway_connections", &[], m.connections());
    w.family(
        "iscsi_gateway_logins_total",
        Kind::Counter,
        "Logins by result: ok, refused (target, ACL or session limit), auth_failed (CHAP).",
    );
    for (label, r) in [
        ("ok", LoginResult::Ok),
        ("refused", LoginResult::Refused),
        ("auth_failed", LoginResult::AuthFailed),
    ] {
        w.sample(
            "iscsi_gateway_logins_total",
            &[("result", label)],
            m.logins(r),
        );
    }
    w.family(
        "iscsi_gateway_protocol_errors_total",
        Kind::Counter,
        "Connections dropped because the peer broke the iSCSI protocol.",
    );
    w.sample(
        "iscsi_gateway_protocol_errors_total",
        &[],
        m.protocol_errors(),
    );
    w.family(
        "iscsi_gateway_data_budget_bytes",
        Kind::Gauge,
        "Command data held by all connections (limits.max_command_data counts it).",
    );
    w.sample(
        "iscsi_gateway_data_budget_bytes",
        &[],
        ctx.data_budget.in_use() as u64,
    );
    w.family(
        "iscsi_gateway_data_budget_limit_bytes",
        Kind::Gauge,
        "limits.max_command_data.",
    );
    w.sample(
        "iscsi_gateway_data_budget_limit_bytes",
        &[],
        ctx.data_budget.limit() as u64,
    );
    w.family(
        "iscsi_gateway_buffer_pool_held_bytes",
        Kind::Gauge,
        "Bytes of aligned I/O buffers the pool holds: in use, or idle in the per-thread free lists.",
    );
    w.sample(
        "iscsi_gateway_buffer_pool_held_bytes",
        &[],
        bufpool::held_bytes() as u64,
    );
    w.family(
        "iscsi_gateway_buffers_live",
        Kind::Gauge,
        "Aligned I/O buffers in use: write data being assembled, reads in flight, Data-In being sent.",
    );
    w.sample(
        "iscsi_gateway_buffers_live",
        &[],
        bufpool::AlignedBuf::live_count() as u64,
    );
    let (registered, unregistered) = crate::block::registered_ops_total();
    w.family(
        "iscsi_gateway_block_ops_total",
        Kind::Counter,
        "Reads and writes handed to io_uring, by buffer: registered (inside the thread's arena registered with the ring, READ_FIXED/WRITE_FIXED) or unregistered.",
    );
    for (label, n) in [("registered", registered), ("unregistered", unregistered)] {
        w.sample("iscsi_gateway_block_ops_total", &[("buffer", label)], n);
    }
    w.family(
        "iscsi_gateway_registered_buffer_bytes",
        Kind::Gauge,
        "Bytes of the connection threads' registered-buffer arenas (limits.registered_buffers_per_thread each): mapped, and in use by buffers now.",
    );
    for (label, n) in [
        ("mapped", bufpool::arena_bytes()),
        ("in_use", bufpool::arena_bytes_in_use()),
    ] {
        w.sample(
            "iscsi_gateway_registered_buffer_bytes",
            &[("state", label)],
            n as u64,
        );
    }
    w.family(
        "iscsi_gateway_registered_buffer_misses_total",
        Kind::Counter,
        "Buffers that found their thread's arena full and came from the unregistered pool instead.",
    );
    w.sample(
        "iscsi_gateway_registered_buffer_misses_total",
        &[],
        bufpool::arena_misses(),
    );
    w.family(
        "iscsi_gateway_buffered_write_pauses_total",
        Kind::Counter,
        "Times a write-back write copied on a connection thread blocked (page cache throttling, a journal wait) and sent the device's buffered writes through io_uring workers for a pause.",
    );
    w.sample(
        "iscsi_gateway_buffered_write_pauses_total",
        &[],
        crate::block::buffered_write_pauses_total(),
    );
    let polls = crate::net::idle_poll::totals();
    w.family(
        "iscsi_gateway_idle_polls_total",
        Kind::Counter,
        "Idle polls of connection threads (server.idle_poll_us) by result: hit (input came within the window, the thread did not sleep), miss (the window ran out, the thread slept).",
    );
    for (label, n) in [("hit", polls.hits), ("miss", polls.misses)] {
        w.sample("iscsi_gateway_idle_polls_total", &[("result", label)], n);
    }
    w.family(
        "iscsi_gateway_idle_poll_seconds_total",
        Kind::Counter,
        "Time connection threads spent polling before they slept: the CPU time server.idle_poll_us costs.",
    );
    w.sample_f64("iscsi_gateway_idle_poll_seconds_total", &[], polls.seconds);
    w.finish()
}
