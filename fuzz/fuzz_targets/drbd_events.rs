//! Fuzzes the `drbdsetup events2` line parser and the resource state machine: every input
//! line is parsed, merged into a resource's state, and the serving verdict computed. A
//! panic anywhere is a bug (the lines come from an external program's output).
//!
//! The two modules are pure and depend only on `thiserror`, so they are compiled in from
//! the gateway's source rather than pulling the whole gateway (tokio, io_uring, ...) into
//! the fuzz build.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/gateway/src/drbd/events.rs"]
mod events;
#[allow(dead_code)]
#[path = "../../crates/gateway/src/drbd/state.rs"]
mod state;

fuzz_target!(|data: &[u8]| {
    let mut st = state::ResourceState::new("r0");
    for line in data.split(|b| *b == b'\n') {
        if let Ok(ev) = events::parse_line(line) {
            st.apply(&ev);
            let _ = st.verdict(true);
            let _ = st.verdict(false);
        }
    }
});
