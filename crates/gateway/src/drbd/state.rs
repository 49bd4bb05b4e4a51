//! The state of one DRBD resource as seen through `drbdsetup events2`, and the rule that
//! decides whether a LUN on it may be served. Pure: events in, [`Verdict`] out.
//!
//! Rule (see ARCHITECTURE.md, "DRBD awareness"): serve only while this node is Primary,
//! or (with DRBD 9 auto-promote) while DRBD says it may promote, because then opening the
//! device read-write promotes it. In both cases every volume must have quorum and access
//! to up-to-date data (its own disk UpToDate, or a connected peer's). Until the first
//! complete dump (`exists -`) nothing is known and nothing is served.

use std::collections::BTreeMap;

use super::events::{Event, Object, Verb};

/// DRBD role of the local node for the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    Primary,
    Secondary,
    #[default]
    Unknown,
}

/// One volume (minor) of the resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Volume {
    /// Local disk state (`UpToDate`, `Diskless`, `Failed`, ...).
    disk: String,
    /// `quorum:` field; absent (quorum not configured / older DRBD) counts as yes.
    quorum: Option<bool>,
}

/// One peer: its connection state and the disk state of each of its volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Peer {
    connection: String,
    peer_disk: BTreeMap<u32, String>,
}

/// Why a LUN is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// No complete state yet (watcher starting or restarting).
    Unknown,
    /// The resource does not exist (not configured, `drbdadm down`).
    NoResource,
    /// Secondary and not promotable (or auto-promote off).
    Secondary,
    /// A volume lost quorum.
    NoQuorum { volume: u32 },
    /// Neither the local disk nor a connected peer has up-to-date data.
    NoData { volume: u32, disk: String },
    /// The resource has no volume (no device).
    NoVolume,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Unknown => write!(f, "DRBD state not known yet"),
            StopReason::NoResource => write!(f, "DRBD resource does not exist"),
            StopReason::Secondary => write!(f, "DRBD role is Secondary"),
            StopReason::NoQuorum { volume } => write!(f, "volume {volume} lost quorum"),
            StopReason::NoData { volume, disk } => {
                write!(f, "volume {volume} has no up-to-date data (disk {disk})")
            }
            StopReason::NoVolume => write!(f, "resource has no volume"),
        }
    }
}

/// What the LUN should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Primary with data and quorum: open the device and serve.
    Serve,
    /// Secondary, `may_promote:yes`, auto-promote on: opening the device read-write
    /// promotes it; serve if that open succeeds.
    Promote,
    /// Do not serve; close the device so DRBD can demote.
    Stop(StopReason),
}

impl Verdict {
    /// True for the verdicts under which the device is (to be) open.
    pub fn serves(&self) -> bool {
        !matches!(self, Verdict::Stop(_))
    }
}

/// Everything known about one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceState {
    name: String,
    /// `exists -` seen: the state is complete.
    complete: bool,
    exists: bool,
    role: Role,
    may_promote: Option<bool>,
    promotion_score: Option<u64>,
    suspended: String,
    volumes: BTreeMap<u32, Volume>,
    peers: BTreeMap<u32, Peer>,
}

fn yes(v: &str) -> Option<bool> {
    match v {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

impl ResourceState {
    /// Empty state for resource `name`; nothing known.
    pub fn new(name: &str) -> Self {
        ResourceState {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn promotion_score(&self) -> Option<u64> {
        self.promotion_score
    }

    pub fn suspended(&self) -> &str {
        &self.suspended
    }

    /// Forget everything (the event source restarted; a new dump follows).
    pub fn reset(&mut self) {
        *self = ResourceState::new(&self.name);
    }

    /// Merges one event. Events about other resources and unknown objects are ignored.
    /// Returns whether anything changed.
    pub fn apply(&mut self, ev: &Event) -> bool {
        let before = self.clone();
        if ev.object == Object::EndOfDump {
            self.complete = true;
            return *self != before;
        }
        if ev.resource() != Some(self.name.as_str()) {
            return false;
        }
        let num = |k: &str| ev.get(k).and_then(|v| v.parse::<u32>().ok());
        match (&ev.object, ev.verb) {
            (Object::Resource, Verb::Destroy) => {
                let complete = self.complete;
                self.reset();
                self.complete = complete;
            }
            (Object::Resource, _) => {
                self.exists = true;
                for (k, v) in &ev.fields {
                    match k.as_str() {
                        "role" => {
                            self.role = match v.as_str() {
                                "Primary" => Role::Primary,
                                "Secondary" => Role::Secondary,
                                _ => Role::Unknown,
                            }
                        }
                        "may_promote" => self.may_promote = yes(v),
                        "promotion_score" => self.promotion_score = v.parse().ok(),
                        "suspended" => self.suspended = v.clone(),
                        _ => {}
                    }
                }
            }
            (Object::Device, verb) => {
                let Some(vol) = num("volume") else {
                    return false;
                };
                if verb == Verb::Destroy {
                    self.volumes.remove(&vol);
                } else {
                    let v = self.volumes.entry(vol).or_default();
                    if let Some(d) = ev.get("disk") {
                        v.disk = d.to_string();
                    }
                    if let Some(q) = ev.get("quorum") {
                        v.quorum = yes(q);
                    }
                }
            }
            (Object::Connection, verb) => {
                let Some(id) = num("peer-node-id") else {
                    return false;
                };
                if verb == Verb::Destroy {
                    self.peers.remove(&id);
                } else if let Some(c) = ev.get("connection") {
                    self.peers.entry(id).or_default().connection = c.to_string();
                }
            }
            (Object::PeerDevice, verb) => {
                let (Some(id), Some(vol)) = (num("peer-node-id"), num("volume")) else {
                    return false;
                };
                let peer = self.peers.entry(id).or_default();
                if verb == Verb::Destroy {
                    peer.peer_disk.remove(&vol);
                } else if let Some(d) = ev.get("peer-disk") {
                    peer.peer_disk.insert(vol, d.to_string());
                }
            }
            _ => {}
        }
        *self != before
    }

    /// Whether volume `vol` can reach up-to-date data: its own disk, or a connected peer's.
    fn has_data(&self, vol: u32, v: &Volume) -> bool {
        v.disk == "UpToDate"
            || self.peers.values().any(|p| {
                p.connection == "Connected"
                    && p.peer_disk.get(&vol).is_some_and(|d| d == "UpToDate")
            })
    }

    /// Whether a LUN on this resource may be served. `auto_promote`: DRBD's auto-promote
    /// is on and the gateway may rely on it (otherwise it waits for a cluster manager to
    /// promote).
    pub fn verdict(&self, auto_promote: bool) -> Verdict {
        if !self.complete {
            return Verdict::Stop(StopReason::Unknown);
        }
        if !self.exists {
            return Verdict::Stop(StopReason::NoResource);
        }
        if self.volumes.is_empty() {
            return Verdict::Stop(StopReason::NoVolume);
        }
        for (vol, v) in &self.volumes {
            if v.quorum == Some(false) {
                return Verdict::Stop(StopReason::NoQuorum { volume: *vol });
            }
            if !self.has_data(*vol, v) {
                return Verdict::Stop(StopReason::NoData {
                    volume: *vol,
                    disk: v.disk.clone(),
                });
            }
        }
        match self.role {
            Role::Primary => Verdict::Serve,
            _ if auto_promote && self.may_promote == Some(true) => Verdict::Promote,
            _ => Verdict::Stop(StopReason::Secondary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::parse_line;
    use super::*;

    fn feed(s: &mut ResourceState, lines: &[&str]) {
        for l in lines {
            s.apply(&parse_line(l.as_bytes()).expect("test line parses"));
        }
    }

    const PRIMARY_DUMP: &[&str] = &[
        "exists resource name:r0 role:Primary suspended:no may_promote:no promotion_score:10102",
        "exists connection name:r0 peer-node-id:1 conn-name:b connection:Connected role:Secondary",
        "exists device name:r0 volume:0 minor:0 disk:UpToDate client:no quorum:yes",
        "exists peer-device name:r0 peer-node-id:1 conn-name:b volume:0 replication:Established peer-disk:UpToDate",
        "exists -",
    ];

    #[test]
    fn nothing_known_before_the_dump_ends() {
        let mut s = ResourceState::new("r0");
        feed(&mut s, &PRIMARY_DUMP[..4]);
        assert_eq!(s.verdict(true), Verdict::Stop(StopReason::Unknown));
        feed(&mut s, &PRIMARY_DUMP[4..]);
        assert_eq!(s.verdict(true), Verdict::Serve);
        assert_eq!(s.promotion_score(), Some(10102));
    }

    #[test]
    fn demotion_and_promotion() {
        let mut s = ResourceState::new("r0");
        feed(&mut s, PRIMARY_DUMP);
        feed(&mut s, &["change resource name:r0 role:Secondary"]);
        assert_eq!(s.role(), Role::Secondary);
        assert_eq!(s.verdict(true), Verdict::Stop(StopReason::Secondary));
        feed(&mut s, &["change resource name:r0 may_promote:yes"]);
        assert_eq!(s.verdict(true), Verdict::Promote);
        assert_eq!(s.verdict(false), Verdict::Stop(StopReason::Secondary));
        feed(
            &mut s,
            &["change resource name:r0 role:Primary may_promote:no"],
        );
        assert_eq!(s.verdict(false), Verdict::Serve);
    }

    #[test]
    fn quorum_and_disk_failures_stop() {
        let mut s = ResourceState::new("r0");
        feed(&mut s, PRIMARY_DUMP);
        feed(&mut s, &["change device name:r0 volume:0 quorum:no"]);
        assert_eq!(
            s.verdict(true),
            Verdict::Stop(StopReason::NoQuorum { volume: 0 })
        );
        feed(
            &mut s,
            &["change device name:r0 volume:0 quorum:yes disk:Failed"],
        );
        // The connected peer still has up-to-date data: DRBD serves I/O through it.
        assert_eq!(s.verdict(true), Verdict::Serve);
        feed(
            &mut s,
            &["change connection name:r0 peer-node-id:1 connection:Connecting"],
        );
        assert_eq!(
            s.verdict(true),
            Verdict::Stop(StopReason::NoData {
                volume: 0,
                disk: "Failed".into()
            })
        );
        feed(&mut s, &["change device name:r0 volume:0 disk:UpToDate"]);
        assert_eq!(s.verdict(true), Verdict::Serve);
    }

    #[test]
    fn other_resources_are_ignored_and_destroy_forgets() {
        let mut s = ResourceState::new("r0");
        feed(&mut s, PRIMARY_DUMP);
        assert!(!s.apply(&parse_line(b"change resource name:r1 role:Secondary").expect("ok")));
        assert_eq!(s.verdict(true), Verdict::Serve);
        feed(&mut s, &["destroy resource name:r0"]);
        assert_eq!(s.verdict(true), Verdict::Stop(StopReason::NoResource));
        let mut empty = ResourceState::new("r0");
        feed(&mut empty, &["exists -"]);
        assert_eq!(empty.verdict(true), Verdict::Stop(StopReason::NoResource));
        feed(&mut empty, &["create resource name:r0 role:Primary"]);
        assert_eq!(empty.verdict(true), Verdict::Stop(StopReason::NoVolume));
    }

    #[test]
    fn reset_forgets_everything() {
        let mut s = ResourceState::new("r0");
        feed(&mut s, PRIMARY_DUMP);
        s.reset();
        assert_eq!(s, ResourceState::new("r0"));
        assert_eq!(s.verdict(true), Verdict::Stop(StopReason::Unknown));
    }
}
