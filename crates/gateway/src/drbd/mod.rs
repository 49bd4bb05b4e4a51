//! DRBD awareness: a LUN with `drbd_resource` is served only while this node may write
//! the resource's device (ARCHITECTURE.md, "DRBD awareness").
//!
//! * [`events`]: parser of `drbdsetup events2` lines (pure, fuzzed).
//! * [`state`]: the resource's state built from those events and the serving rule (pure).
//! * [`watcher`]: the I/O shell: runs `drbdsetup events2 RESOURCE`, feeds the state, and
//!   publishes the verdict; restarts `drbdsetup` with bounded backoff when it exits.
//!
//! Acting on the verdict (open, drain, close, unit attentions) is `net::lun_gate`.

pub mod events;
pub mod state;
pub mod watcher;
