use std::sync::Arc;
use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

fn spawn_enter(
    gate: &Arc<RmwGate>,
    span: Range<u64>,
    rmw: bool,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let (leave_tx, leave_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = gate.clone();
    let task = tokio::spawn(async move {
        let _held = gate.enter(Some(span), rmw).await;
        let _ = entered_tx.send(());
        let _ = leave_rx.await;
    });
    (task, entered_rx, leave_tx)
}

/// Waits (bounded) until the spawned taker is inside.
async fn enters(rx: &mut tokio::sync::oneshot::Receiver<()>) {
    tokio::time::timeout(LONG, rx)
        .await
        .expect("never got in")
        .expect("sent");
}

async fn entered_soon(rx: &mut tokio::sync::oneshot::Receiver<()>) -> bool {
    tokio::time::timeout(WAIT, rx).await.is_ok()
}

#[tokio::test]
async fn commands_are_counted_while_they_hold_the_gate() {
    let g = RmwGate::default();
    let a = g.enter(Some(0..4096), false).await;
    let b = g.enter(Some(0..4096), false).await;
    let none = g.enter(None, true).await;
    assert_eq!(g.counted(), 2);
    drop((a, b, none));
    assert_eq!(g.counted(), 0);
}

#[tokio::test]
async fn a_read_modify_write_waits_for_io_that_entered_before_it() {
    let g = Arc::new(RmwGate::default());
    // Overlapping and not: both entered before the registration, so both are waited for.
    let overlapping = g.enter(Some(0..4096), false).await;
    let elsewhere = g.enter(Some(1 << 20..(1 << 20) + 4096), false).await;
    let (rmw, mut rmw_in, rmw_leave) = spawn_enter(&g, 512..1024, true);
    assert!(!entered_soon(&mut rmw_in).await, "ran beside earlier I/O");
    drop(overlapping);
    assert!(!entered_soon(&mut rmw_in).await, "ran beside earlier I/O");
    drop(elsewhere);
    enters(&mut rmw_in).await;
    drop(rmw_leave);
    rmw.await.expect("task");
}

#[tokio::test]
async fn later_io_waits_only_where_it_overlaps() {
    let g = Arc::new(RmwGate::default());
    let (rmw, mut rmw_in, rmw_leave) = spawn_enter(&g, 512..1024, true);
    enters(&mut rmw_in).await;
    // Disjoint I/O goes on at once, reads or writes alike.
    let beside = tokio::time::timeout(WAIT, g.enter(Some(1024..4096), false))
        .await
        .expect("disjoint I/O was held back");
    let (over, mut over_in, over_leave) = spawn_enter(&g, 0..513, false);
    assert!(!entered_soon(&mut over_in).await, "overlapping I/O got in");
    assert_eq!(g.counted(), 1, "a waiting command is not counted");
    drop(rmw_leave);
    rmw.await.expect("task");
    enters(&mut over_in).await;
    drop((beside, over_leave));
    over.await.expect("task");
    assert_eq!(g.counted(), 0);
}

#[tokio::test]
async fn overlapping_read_modify_writes_take_turns_and_disjoint_ones_do_not() {
    let g = Arc::new(RmwGate::default());
    let first = g.enter(Some(0..512), true).await;
    let disjoint = tokio::time::timeout(WAIT, g.enter(Some(512..1024), true))
        .await
        .expect("a disjoint read-modify-write waited");
    let (second, mut second_in, second_leave) = spawn_enter(&g, 256..768, true);
    assert!(
        !entered_soon(&mut second_in).await,
        "two overlapping ran at once"
    );
    drop(first);
    assert!(
        !entered_soon(&mut second_in).await,
        "overlaps the other one still"
    );
    drop(disjoint);
    enters(&mut second_in).await;
    drop(second_leave);
    second.await.expect("task");
}

#[tokio::test]
async fn an_abandoned_wait_leaves_nothing_behind() {
    let g = RmwGate::default();
    let earlier = g.enter(Some(0..4096), false).await;
    // Registered, then abandoned during its grace period.
    assert!(tokio::time::timeout(WAIT, g.enter(Some(0..512), true))
        .await
        .is_err());
    drop(earlier);
    assert_eq!(g.counted(), 0);
    let again = tokio::time::timeout(WAIT, g.enter(Some(0..512), false))
        .await
        .expect("the abandoned registration still holds the span");
    drop(again);
    let rmw = tokio::time::timeout(WAIT, g.enter(Some(0..512), true))
        .await
        .expect("a read-modify-write after the abandoned one");
    drop(rmw);
}

/// Spans of 1 to 3 of 8 slots of 512 bytes, from a seed (xorshift: no dependency).
fn next_span(seed: &mut u64) -> (Range<u64>, bool) {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let start = *seed % 8;
    let len = 1 + (*seed >> 8) % 3;
    let rmw = (*seed >> 16).is_multiple_of(8);
    (start * 512..(start + len).min(8) * 512, rmw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_takers_never_overlap_a_read_modify_write() {
    let g = Arc::new(RmwGate::default());
    // What is inside now: (span, is a read-modify-write).
    let inside = Arc::new(Mutex::new(Vec::<(Range<u64>, bool)>::new()));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let (g, inside) = (g.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (i + 1);
            for _ in 0..400 {
                let (span, rmw) = next_span(&mut seed);
                let _held = g.enter(Some(span.clone()), rmw).await;
                {
                    let mut now = inside.lock().expect("lock");
                    let clash = now.iter().find(|(s, other_rmw)| {
                        (rmw || *other_rmw) && s.start < span.end && span.start < s.end
                    });
                    assert!(clash.is_none(), "{span:?} (rmw {rmw}) beside {clash:?}");
                    now.push((span.clone(), rmw));
                }
                for _ in 0..1 + seed % 3 {
                    tokio::task::yield_now().await;
                }
                let mut now = inside.lock().expect("lock");
                let at = now.iter().position(|(s, r)| *s == span && *r == rmw);
                now.swap_remove(at.expect("own entry"));
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a taker hung")
            .expect("task panicked");
    }
    assert_eq!(g.counted(), 0);
}
