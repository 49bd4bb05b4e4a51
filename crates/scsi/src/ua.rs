//! Per-I_T-nexus bookkeeping of a logical unit: which nexuses have been seen (and
//! through which initiator/target port) and their queues of pending unit attentions.

use std::collections::{HashMap, VecDeque};

use crate::sense::Asc;
use crate::types::Nexus;

/// Most unit attentions queued per nexus; older ones are dropped beyond this.
const MAX_UA: usize = 16;

/// What the LUN knows about one I_T nexus.
#[derive(Debug, Clone)]
pub(crate) struct NexusState {
    pub initiator_port: String,
    pub relative_port_id: u16,
    ua: VecDeque<Asc>,
}

/// All nexuses that have sent a command to this LUN.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nexuses {
    map: HashMap<u64, NexusState>,
    /// Counts every unit attention queued (a new nexus's POWER ON included), so the LUN
    /// can tell its lock-free readers that one may now be pending (`fast.rs`).
    queued: u64,
}

impl Nexuses {
    /// Register a nexus on its first command (with a POWER ON, RESET UA).
    pub fn touch(&mut self, nexus: &Nexus) {
        if self.map.contains_key(&nexus.id) {
            return;
        }
        self.map.insert(
            nexus.id,
            NexusState {
                initiator_port: nexus.initiator_port.clone(),
                relative_port_id: nexus.relative_port_id,
                ua: VecDeque::from([Asc::POWER_ON_RESET]),
            },
        );
        self.queued += 1;
    }

    /// How many unit attentions have been queued so far (any nexus).
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Whether `id` is a known nexus with no unit attention pending.
    pub fn is_clear(&self, id: u64) -> bool {
        self.map.get(&id).is_some_and(|st| st.ua.is_empty())
    }

    /// Forget a nexus.
    pub fn remove(&mut self, id: u64) {
        self.map.remove(&id);
    }

    fn push_to(st: &mut NexusState, queued: &mut u64, asc: Asc) {
        *queued += 1;
        if st.ua.contains(&asc) {
            return;
        }
        if st.ua.len() >= MAX_UA {
            st.ua.pop_front();
        }
        st.ua.push_back(asc);
    }

    /// Queue a UA for one nexus.
    pub fn push(&mut self, id: u64, asc: Asc) {
        if let Some(st) = self.map.get_mut(&id) {
            Self::push_to(st, &mut self.queued, asc);
        }
    }

    /// Queue a UA for every nexus except `except`.
    pub fn push_all_except(&mut self, except: Option<u64>, asc: Asc) {
        for (id, st) in self.map.iter_mut() {
            if Some(*id) != except {
                Self::push_to(st, &mut self.queued, asc);
            }
        }
    }

    /// A reset: the reset UA replaces everything pending.
    pub fn reset_all(&mut self, asc: Asc) {
        for st in self.map.values_mut() {
            st.ua.clear();
            st.ua.push_back(asc);
            self.queued += 1;
        }
    }

    /// Take the oldest pending UA of a nexus.
    pub fn pop(&mut self, id: u64) -> Option<Asc> {
        self.map.get_mut(&id).and_then(|st| st.ua.pop_front())
    }

    /// Ids of the nexuses for which `pred(initiator_port, relative_port_id)` holds.
    pub fn ids_where(&self, pred: impl Fn(&str, u16) -> bool) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, st)| pred(&st.initiator_port, st.relative_port_id))
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nx(id: u64) -> Nexus {
        Nexus {
            id,
            initiator_port: format!("iqn.x,i,0x{id:012x}"),
            initiator_name: "iqn.x".into(),
            relative_port_id: 1,
        }
    }

    #[test]
    fn first_touch_queues_power_on() {
        let mut n = Nexuses::default();
        n.touch(&nx(1));
        n.touch(&nx(1));
        assert_eq!(n.pop(1), Some(Asc::POWER_ON_RESET));
        assert_eq!(n.pop(1), None);
    }

    #[test]
    fn queued_counts_every_attention_and_is_clear_follows_the_queue() {
        let mut n = Nexuses::default();
        assert!(!n.is_clear(1), "an unknown nexus is not clear");
        n.touch(&nx(1));
        assert_eq!(n.queued(), 1);
        assert!(!n.is_clear(1));
        n.pop(1);
        assert!(n.is_clear(1));
        n.touch(&nx(1));
        assert_eq!(n.queued(), 1, "a known nexus queues nothing on touch");
        n.push(1, Asc::MODE_PARAMETERS_CHANGED);
        n.push(1, Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(
            n.queued(),
            3,
            "a duplicate still counts: the queue was looked at"
        );
        assert!(!n.is_clear(1));
        n.pop(1);
        n.reset_all(Asc::BUS_DEVICE_RESET);
        assert_eq!(n.queued(), 4);
        assert!(!n.is_clear(1));
    }

    #[test]
    fn dedupe_and_reset() {
        let mut n = Nexuses::default();
        n.touch(&nx(1));
        n.touch(&nx(2));
        n.push_all_except(Some(1), Asc::MODE_PARAMETERS_CHANGED);
        n.push_all_except(Some(1), Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(n.pop(1), Some(Asc::POWER_ON_RESET));
        assert_eq!(n.pop(1), None);
        assert_eq!(n.pop(2), Some(Asc::POWER_ON_RESET));
        assert_eq!(n.pop(2), Some(Asc::MODE_PARAMETERS_CHANGED));
        assert_eq!(n.pop(2), None);
        n.reset_all(Asc::BUS_DEVICE_RESET);
        assert_eq!(n.pop(2), Some(Asc::BUS_DEVICE_RESET));
    }
}
