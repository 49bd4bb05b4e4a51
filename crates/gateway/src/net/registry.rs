//! Gateway-wide session bookkeeping: TSIH allocation, the I_T nexus id of each
//! (initiator port, target) pair, and a control channel to every live session so one
//! session's action (session reinstatement, PREEMPT AND ABORT, shutdown) can reach another.
//! It also answers the per-initiator session cap (`[limits] max_sessions_per_initiator`).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// What one connection task can be told by others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The session was reinstated by a new login, or the gateway is shutting down.
    Close(&'static str),
    /// Abort every task of this session (PREEMPT AND ABORT named its nexus).
    AbortAll,
}

/// Key of an I_T nexus: initiator port name ("iqn...,i,0x<isid>") and target name.
type NexusKey = (String, String);

struct Live {
    tsih: u16,
    conn_id: u64,
    control: mpsc::UnboundedSender<Control>,
}

#[derive(Default)]
struct Inner {
    next_tsih: u16,
    next_nexus: u64,
    next_conn: u64,
    nexus_ids: HashMap<NexusKey, u64>,
    live: HashMap<NexusKey, Live>,
}

/// Shared by every connection task.
#[derive(Default)]
pub struct SessionRegistry {
    inner: Mutex<Inner>,
}

/// A registered session; the connection task keeps it and calls
/// [`SessionRegistry::unregister`] when it ends.
#[derive(Debug, Clone)]
pub struct Registration {
    pub nexus_id: u64,
    pub tsih: u16,
    conn_id: u64,
    key: NexusKey,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh, non-zero TSIH not used by a live session.
    pub fn allocate_tsih(&self) -> u16 {
        let mut inner = self.lock();
        loop {
            inner.next_tsih = inner.next_tsih.wrapping_add(1);
            let t = inner.next_tsih;
            if t != 0 && !inner.live.values().any(|l| l.tsih == t) {
                return t;
            }
        }
    }

    /// TSIH of the live session of this initiator port on this target, if any.
    pub fn live_tsih(&self, initiator_port: &str, target: &str) -> Option<u16> {
        let key = (initiator_port.to_owned(), target.to_owned());
        self.lock().live.get(&key).map(|l| l.tsih)
    }

    /// Whether `initiator_name` may open a session on `target` from `initiator_port` while at
    /// most `max` sessions per initiator name are allowed. Reinstating the live session of the
    /// same I_T nexus replaces it, so it is always allowed.
    pub fn admits(
        &self,
        initiator_name: &str,
        initiator_port: &str,
        target: &str,
        max: u32,
    ) -> bool {
        let inner = self.lock();
        let key = (initiator_port.to_owned(), target.to_owned());
        if inner.live.contains_key(&key) {
            return true;
        }
        let open = inner
            .live
            .keys()
            .filter(|(port, _)| initiator_of(port) == initiator_name)
            .count();
        open < max as usize
    }

    /// Registers a session that reached full feature phase. An older session of the same
    /// I_T nexus is told to close (session reinstatement, RFC 7143 §6.3.5); the nexus id is
    /// kept, so SCSI state tied to the nexus (unit attentions, reservations) carries over.
    pub fn register(
        &self,
        initiator_port: &str,
        target: &str,
        tsih: u16,
        control: mpsc::UnboundedSender<Control>,
    ) -> Registration {
        let key = (initiator_port.to_owned(), target.to_owned());
        let mut inner = self.lock();
        let nexus_id = match inner.nexus_ids.get(&key) {
            Some(id) => *id,
            None => {
                inner.next_nexus += 1;
                let id = inner.next_nexus;
                inner.nexus_ids.insert(key.clone(), id);
                id
            }
        };
        inner.next_conn += 1;
        let conn_id = inner.next_conn;
        let old = inner.live.insert(
            key.clone(),
            Live {
                tsih,
                conn_id,
                control,
            },
        );
        if let Some(old) = old {
            let _ = old
                .control
                .send(Control::Close("session reinstated by a new login"));
        }
        Registration {
            nexus_id,
            tsih,
            conn_id,
            key,
        }
    }

    /// Forgets a session unless a newer one already replaced it.
    pub fn unregister(&self, reg: &Registration) {
        let mut inner = self.lock();
        if inner
            .live
            .get(&reg.key)
            .is_some_and(|l| l.conn_id == reg.conn_id)
        {
            inner.live.remove(&reg.key);
        }
    }

    /// Normal sessions registered now (for metrics).
    pub fn session_count(&self) -> usize {
        self.lock().live.len()
    }

    /// Sends `msg` to the live session of each nexus id in `nexus_ids`.
    pub fn send_to_nexuses(&self, nexus_ids: &[u64], msg: Control) {
        let inner = self.lock();
        for (key, live) in &inner.live {
            if inner
                .nexus_ids
                .get(key)
                .is_some_and(|id| nexus_ids.contains(id))
            {
                let _ = live.control.send(msg.clone());
            }
        }
    }

    /// Tells every live session to close.
    pub fn close_all(&self, reason: &'static str) {
        for live in self.lock().live.values() {
            let _ = live.control.send(Control::Close(reason));
        }
    }
}

/// The initiator name of an initiator port name ("name,i,0x<isid>").
fn initiator_of(port: &str) -> &str {
    port.rsplit_once(",i,0x").map_or(port, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_per_initiator_are_capped_but_reinstatement_is_not() {
        let reg = SessionRegistry::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(reg.admits("iqn.a", "iqn.a,i,0x1", "iqn.t1", 2));
        let a1 = reg.register("iqn.a,i,0x1", "iqn.t1", 1, tx.clone());
        reg.register("iqn.a,i,0x2", "iqn.t2", 2, tx.clone());
        // A third session of iqn.a (any target, any ISID) is over the cap of 2 ...
        assert!(!reg.admits("iqn.a", "iqn.a,i,0x3", "iqn.t1", 2));
        assert!(!reg.admits("iqn.a", "iqn.a,i,0x1", "iqn.t3", 2));
        // ... a reinstatement of a live nexus is not a new session ...
        assert!(reg.admits("iqn.a", "iqn.a,i,0x1", "iqn.t1", 2));
        // ... other initiators (even one whose name extends iqn.a) have their own count.
        assert!(reg.admits("iqn.a.b", "iqn.a.b,i,0x1", "iqn.t1", 2));
        reg.register("iqn.b,i,0x1", "iqn.t1", 3, tx);
        assert!(reg.admits("iqn.b", "iqn.b,i,0x2", "iqn.t1", 2));
        // A session ending frees its place.
        reg.unregister(&a1);
        assert!(reg.admits("iqn.a", "iqn.a,i,0x3", "iqn.t1", 2));
    }

    #[test]
    fn reinstatement_keeps_the_nexus_id_and_closes_the_old_session() {
        let reg = SessionRegistry::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let a = reg.register("iqn.x,i,0x1", "iqn.t", 1, tx1);
        let b = reg.register("iqn.x,i,0x1", "iqn.t", 2, tx2);
        assert_eq!(a.nexus_id, b.nexus_id);
        assert_eq!(
            rx1.try_recv().ok(),
            Some(Control::Close("session reinstated by a new login"))
        );
        // The old session ending must not remove the new one.
        reg.unregister(&a);
        assert_eq!(reg.live_tsih("iqn.x,i,0x1", "iqn.t"), Some(2));
        reg.unregister(&b);
        assert_eq!(reg.live_tsih("iqn.x,i,0x1", "iqn.t"), None);
    }

    #[test]
    fn distinct_ports_get_distinct_nexus_ids_and_tsihs_are_nonzero() {
        let reg = SessionRegistry::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = reg.register("iqn.x,i,0x1", "iqn.t", reg.allocate_tsih(), tx.clone());
        let b = reg.register("iqn.x,i,0x2", "iqn.t", reg.allocate_tsih(), tx);
        assert_ne!(a.nexus_id, b.nexus_id);
        assert_ne!(a.tsih, 0);
        assert_ne!(a.tsih, b.tsih);
    }
}
