//! A tiny log rate limiter: at most one line per key (initiator, address, cause) per
//! interval, and at most a few lines in total per interval, so a flood of refused logins
//! (or one rotating its initiator name) cannot flood the log. Lines that were held back are
//! counted and reported with the next line that gets through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most; older ones are forgotten first.
const MAX_KEYS: usize = 4096;

pub struct RateLimiter {
    interval: Duration,
    max_per_interval: u32,
    state: Mutex<State>,
}

struct State {
    /// Per key: when it was last logged.
    last: HashMap<String, Instant>,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimiter {
    pub fn new(interval: Duration, max_per_interval: u32) -> Self {
        RateLimiter {
            interval,
            max_per_interval,
            state: Mutex::new(State {
                last: HashMap::new(),
                window_start: None,
                in_window: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line for `key` may be logged now (`n` lines were held back since the
    /// last one that was logged), `None` when it must be dropped.
    pub fn check(&self, key: &str, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < self.interval;
        if s.window_start.is_none_or(|w| !fresh(&w)) {
            s.window_start = Some(now);
            s.in_window = 0;
        }
        let key_recent = s.last.get(key).is_some_and(fresh);
        if key_recent || s.in_window >= self.max_per_interval {
            s.suppressed += 1;
            return None;
        }
        if s.last.len() >= MAX_KEYS {
            s.last.retain(|_, t| fresh(t));
            if s.last.len() >= MAX_KEYS {
                s.last.clear();
            }
        }
        s.last.insert(key.to_string(), now);
        s.in_window += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_and_a_global_cap() {
        let l = RateLimiter::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Some(0));
        assert_eq!(l.check("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check("b", t0 + Duration::from_secs(1)), Some(1));
        assert_eq!(l.check("c", t0 + Duration::from_secs(2)), Some(0));
        // Global cap of 3 per window reached.
        assert_eq!(l.check("d", t0 + Duration::from_secs(3)), None);
        // Next window: "a" again, and the two held-back lines are reported.
        assert_eq!(l.check("a", t0 + Duration::from_secs(11)), Some(1));
        assert_eq!(l.check("d", t0 + Duration::from_secs(12)), Some(0));
    }

    #[test]
    fn key_table_stays_bounded() {
        let l = RateLimiter::new(Duration::from_secs(1), u32::MAX);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 2) {
            assert!(l.check(&i.to_string(), t0).is_some());
        }
        let n = l.state.lock().map(|s| s.last.len()).unwrap_or(usize::MAX);
        assert!(n <= MAX_KEYS, "{n}");
    }
}
