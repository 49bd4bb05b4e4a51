//! Adaptive ring depth: how many of one connection's operations may be in the kernel at once,
//! chosen by the completion rate that connection gets.
//!
//! Why: some disks complete what they were given in one batch (the virtio disks of cloud VMs,
//! benches/README.md "a convoy"). One session at QD32 then hands the disk all 32 commands,
//! gets all 32 back together, and the disk idles while the responses travel and the initiator
//! answers with the next 32: disk and network take turns. Holding some commands back in the
//! gateway until earlier ones complete keeps the disk busy while the network works, and
//! measured up to 20 % more IOPS there. A fixed cap would cost a device that answers each
//! operation after a fixed delay and needs depth to be fast (DRBD protocol C waits for its
//! peers), so the cap is not configured but measured.
//!
//! How: time runs in epochs of [`EPOCH`]. After some epochs at the current cap, a trial
//! compares it with a neighbouring cap, a quarter lower or a third higher, taking turns: the
//! trial runs [`TRIAL_EPOCHS`] epochs alternating between the two in the order ABBA ABBA, so a
//! drift of the device's speed during the trial counts against both alike, and compares
//! their completion rates. A lower cap is adopted only when it completed clearly more
//! ([`GAIN`]), a higher one unless it completed clearly less ([`TOLERANCE`]): ties go to more
//! depth, so a device that gains nothing from holding back keeps all of it. After a rejected
//! trial the wait before the next one doubles, up to [`MAX_SETTLE_EPOCHS`]. Trials run only
//! where they can matter: down when at least [`MIN_CAP`] operations would stay allowed, up
//! only when the cap held operations back. An epoch with too few completions to compare
//! ([`MIN_EPOCH_OPS`]) ends a trial undecided.
//!
//! Pure state machine: the caller reports demand and completions and passes the time.

use std::time::{Duration, Instant};

/// Length of one measurement epoch.
pub(crate) const EPOCH: Duration = Duration::from_millis(50);
/// Epochs of one trial, half at each cap.
pub(crate) const TRIAL_EPOCHS: u32 = 8;
/// The cap never goes below this many operations.
pub(crate) const MIN_CAP: usize = 8;
/// Completions an epoch needs for its rate to be compared.
pub(crate) const MIN_EPOCH_OPS: u64 = 200;
/// A lower cap must complete this much more (relative) to be adopted.
pub(crate) const GAIN: f64 = 0.05;
/// A higher cap is adopted unless it completes this much less (relative).
pub(crate) const TOLERANCE: f64 = 0.03;
/// Epochs at the cap before the first trial, and after an adopted one.
const SETTLE_EPOCHS: u32 = 2;
/// The longest wait between trials (after rejected trials in a row).
pub(crate) const MAX_SETTLE_EPOCHS: u32 = 32;

/// A comparison of the settled cap with `probe`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Trial {
    probe: usize,
    up: bool,
    /// Epochs of this trial done so far.
    epoch: u32,
    /// Completions and seconds at the settled cap, and at the probe.
    base: (u64, f64),
    tried: (u64, f64),
}

impl Trial {
    /// Whether trial epoch `i` runs at the probe (ABBA ABBA).
    fn probing(i: u32) -> bool {
        matches!(i % 4, 1 | 2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Running at the settled cap, watching the demand.
    Settle,
    Trial(Trial),
}

/// The adaptive cap of one ring. See the module docs.
#[derive(Debug)]
pub(crate) struct DepthLimiter {
    max: usize,
    cap: usize,
    phase: Phase,
    started: Instant,
    completed: u64,
    /// Most operations queued or in flight at once since the last trial.
    peak_demand: usize,
    /// The cap held operations back since the last trial.
    bound: bool,
    settled: u32,
    settle_target: u32,
    up_next: bool,
}

impl DepthLimiter {
    /// A limiter that starts with no cap below `max` (the ring's own limit).
    pub(crate) fn new(max: usize, now: Instant) -> Self {
        let max = max.max(1);
        DepthLimiter {
            max,
            cap: max,
            phase: Phase::Settle,
            started: now,
            completed: 0,
            peak_demand: 0,
            bound: false,
            settled: 0,
            settle_target: SETTLE_EPOCHS,
            up_next: false,
        }
    }

    /// How many operations may be in flight now.
    pub(crate) fn cap(&self) -> usize {
        match self.phase {
            Phase::Trial(t) if Trial::probing(t.epoch) => t.probe,
            _ => self.cap,
        }
    }

    /// The cap adopted outside trials (for logs and tests).
    #[cfg(test)]
    pub(crate) fn settled_cap(&self) -> usize {
        self.cap
    }

    /// Reports how many operations are queued or in flight, and whether the cap is holding
    /// some of them back.
    pub(crate) fn note_demand(&mut self, demand: usize, held_back: bool) {
        if self.phase == Phase::Settle {
            self.peak_demand = self.peak_demand.max(demand);
            self.bound |= held_back;
        }
    }

    /// Reports finished operations.
    pub(crate) fn note_completed(&mut self, n: u64) {
        self.completed = self.completed.saturating_add(n);
    }

    /// Ends the epoch when it is over and decides what the next one runs at. Returns the new
    /// settled cap when it changed.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<usize> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < EPOCH {
            return None;
        }
        let completed = std::mem::take(&mut self.completed);
        self.started = now;
        let busy = completed >= MIN_EPOCH_OPS;
        match self.phase {
            Phase::Settle => {
                if !busy {
                    self.settled = 0;
                    self.peak_demand = 0;
                    self.bound = false;
                    return None;
                }
                self.settled += 1;
                if self.settled >= self.settle_target {
                    self.settled = 0;
                    self.phase = self.next_trial();
                    self.peak_demand = 0;
                    self.bound = false;
                }
                None
            }
            Phase::Trial(mut t) => {
                if !busy {
                    self.phase = Phase::Settle;
                    return None;
                }
                let side = if Trial::probing(t.epoch) {
                    &mut t.tried
                } else {
                    &mut t.base
                };
                side.0 += completed;
                side.1 += elapsed.as_secs_f64();
                t.epoch += 1;
                if t.epoch < TRIAL_EPOCHS {
                    self.phase = Phase::Trial(t);
                    return None;
                }
                self.phase = Phase::Settle;
                self.decide(t)
            }
        }
    }

    fn decide(&mut self, t: Trial) -> Option<usize> {
        let rate = |(ops, secs): (u64, f64)| if secs > 0.0 { ops as f64 / secs } else { 0.0 };
        let (base, tried) = (rate(t.base), rate(t.tried));
        let better = if t.up {
            tried >= base * (1.0 - TOLERANCE)
        } else {
            tried > base * (1.0 + GAIN)
        };
        if better && t.probe != self.cap {
            self.cap = t.probe;
            self.settle_target = SETTLE_EPOCHS;
            Some(t.probe)
        } else {
            self.settle_target = (self.settle_target * 2).min(MAX_SETTLE_EPOCHS);
            None
        }
    }

    /// The trial to run after settling, taking turns between down and up.
    fn next_trial(&mut self) -> Phase {
        // Below the demand the cap is what bounds the depth; above it nothing does.
        let in_use = self.cap.min(self.peak_demand);
        let down = (in_use * 3 / 4).max(MIN_CAP);
        let down = (down < in_use).then_some(down);
        let up = (self.bound && self.cap < self.max).then(|| (self.cap * 4 / 3 + 1).min(self.max));
        let (probe, up) = match (down, up) {
            (Some(d), Some(u)) => {
                if self.up_next {
                    (u, true)
                } else {
                    (d, false)
                }
            }
            (Some(d), None) => (d, false),
            (None, Some(u)) => (u, true),
            (None, None) => return Phase::Settle,
        };
        self.up_next = !self.up_next;
        Phase::Trial(Trial {
            probe,
            up,
            epoch: 0,
            base: (0, 0.0),
            tried: (0, 0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `l` for `epochs` epochs against a model: the completion rate (per second) at a
    /// given cap, with `demand` operations outstanding.
    fn run(
        l: &mut DepthLimiter,
        t: &mut Instant,
        epochs: u32,
        demand: usize,
        mut rate: impl FnMut(usize) -> f64,
    ) {
        for _ in 0..epochs {
            let cap = l.cap();
            l.note_demand(demand, demand > cap);
            l.note_completed((rate(cap.min(demand)) * EPOCH.as_secs_f64()) as u64);
            *t += EPOCH;
            l.tick(*t);
        }
    }

    /// A batching disk: best throughput at 16-24 in flight, worse with all 32.
    fn convoy(depth: usize) -> f64 {
        match depth {
            0..=8 => 44_000.0,
            9..=12 => 49_000.0,
            13..=24 => 54_000.0,
            _ => 45_000.0,
        }
    }

    /// A device whose rate grows with depth (fixed latency, like DRBD protocol C).
    fn latency_bound(depth: usize) -> f64 {
        depth as f64 * 5_000.0
    }

    #[test]
    fn noisy_epochs_still_leave_the_convoy() {
        // Epoch rates scattered by up to ±10 % (a fixed-seed LCG; a real disk scattered by
        // 10-20 %): the cap still ends below the demand, where the batching disk is faster.
        let mut seed = 0x2545_f491_u64;
        let mut noise = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            0.9 + 0.2 * ((seed >> 33) as f64 / (1u64 << 31) as f64)
        };
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        let mut capped = 0;
        for _ in 0..2_000 {
            run(&mut l, &mut t, 1, 32, |d| convoy(d) * noise());
            if l.settled_cap() < 32 {
                capped += 1;
            }
        }
        assert!(capped > 1_800, "capped in {capped} of 2000 epochs");
    }

    #[test]
    fn starts_uncapped() {
        let l = DepthLimiter::new(128, Instant::now());
        assert_eq!(l.cap(), 128);
    }

    #[test]
    fn finds_the_batching_disks_better_depth() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        run(&mut l, &mut t, 200, 32, convoy);
        let cap = l.settled_cap();
        assert!((13..=24).contains(&cap), "settled at {cap}");
    }

    #[test]
    fn keeps_full_depth_when_depth_pays() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        run(&mut l, &mut t, 400, 64, latency_bound);
        assert_eq!(l.settled_cap(), 128);
    }

    #[test]
    fn climbs_back_when_the_device_changes() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        run(&mut l, &mut t, 200, 32, convoy);
        assert!(l.settled_cap() < 32);
        run(&mut l, &mut t, 400, 32, latency_bound);
        assert!(l.settled_cap() >= 32, "settled at {}", l.settled_cap());
    }

    #[test]
    fn never_below_the_minimum() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        // Less depth is always better: the cap stops at the minimum.
        run(&mut l, &mut t, 400, 32, |d| 1_000_000.0 / d as f64);
        assert_eq!(l.settled_cap(), MIN_CAP);
        assert!(l.cap() >= MIN_CAP);
    }

    #[test]
    fn idle_epochs_change_nothing() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        run(&mut l, &mut t, 100, 32, |_| 1_000.0);
        assert_eq!(l.settled_cap(), 128);
        assert_eq!(l.cap(), 128);
    }

    #[test]
    fn shallow_demand_is_never_probed() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        for _ in 0..100 {
            run(&mut l, &mut t, 1, 4, |_| 50_000.0);
            assert_eq!(l.cap(), 128);
        }
    }

    #[test]
    fn a_short_tick_is_not_an_epoch() {
        let t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        l.note_completed(10_000);
        assert_eq!(l.tick(t + EPOCH / 2), None);
        assert_eq!(l.completed, 10_000);
    }

    #[test]
    fn probes_back_off_while_rejected() {
        let mut t = Instant::now();
        let mut l = DepthLimiter::new(128, t);
        // Flat device: every probe is rejected (down) or adopted only up to the demand.
        run(&mut l, &mut t, 400, 32, |_| 50_000.0);
        assert_eq!(l.settle_target, MAX_SETTLE_EPOCHS);
        assert_eq!(l.settled_cap(), 128);
    }
}
