//! Fuzzes the `drbdsetup events2` line parser and the resource state machine: every input
//! line is parsed, merged into a resource's state, and the serving verdict computed. A
//! panic anywhere is a bug (the lines come from an external program's output).
#![no_main]
use gateway::drbd::events::parse_line;
use gateway::drbd::state::ResourceState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut state = ResourceState::new("r0");
    for line in data.split(|b| *b == b'\n') {
        if let Ok(ev) = parse_line(line) {
            state.apply(&ev);
            let _ = state.verdict(true);
            let _ = state.verdict(false);
        }
    }
});
