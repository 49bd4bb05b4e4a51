//! Persistent reservations (SPC-4 5.12): PERSISTENT RESERVE IN (READ KEYS, READ
//! RESERVATION, REPORT CAPABILITIES, READ FULL STATUS), PERSISTENT RESERVE OUT
//! (REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT, REGISTER AND
//! IGNORE EXISTING KEY, REGISTER AND MOVE) and the reservation conflict rules.

use bytes::Bytes;

use crate::cdb::{put_be, truncate, Fields};
use crate::lun::{Exec, Fail, LogicalUnit};
use crate::opcodes::PrClass;
use crate::pr_state::{PrState, PrType, Registration, Reservation};
use crate::response::Response;
use crate::sense::{Asc, Sense};
use crate::task::Task;
use crate::types::{Command, Nexus};

const SA_REGISTER: u8 = 0;
const SA_RESERVE: u8 = 1;
const SA_RELEASE: u8 = 2;
const SA_CLEAR: u8 = 3;
const SA_PREEMPT: u8 = 4;
const SA_PREEMPT_AND_ABORT: u8 = 5;
const SA_REGISTER_AND_IGNORE: u8 = 6;
const SA_REGISTER_AND_MOVE: u8 = 7;

/// Does a command of this class from this nexus conflict with the persistent
/// reservation? (SPC-4 table "commands allowed in the presence of reservations".)
pub(crate) fn pr_conflicts(pr: &PrState, nexus: &Nexus, class: PrClass) -> bool {
    let Some(res) = &pr.reservation else {
        return false;
    };
    let blocked = match class {
        PrClass::Allowed | PrClass::Special => false,
        PrClass::Read => res.pr_type.exclusive_access(),
        PrClass::Write => true,
    };
    if !blocked || pr.is_holder(&nexus.initiator_port, nexus.relative_port_id) {
        return false;
    }
    let registered = pr
        .registration(&nexus.initiator_port, nexus.relative_port_id)
        .is_some();
    !(res.pr_type.registrants_access() && registered)
}

/// An iSCSI TransportID for an initiator port (format 01b when the port name carries
/// an ISID, else format 00b with the device name), padded to a multiple of 4.
fn transport_id(reg: &Registration) -> Vec<u8> {
    let (format, name) = if reg.initiator_port.contains(",i,0x") {
        (0x40u8, reg.initiator_port.as_str())
    } else {
        (0x00u8, reg.initiator_name.as_str())
    };
    let mut s: Vec<u8> = name.bytes().take(220).collect();
    s.push(0);
    while s.len() & 3 != 0 || s.len() < 20 {
        s.push(0);
    }
    let mut t = vec![format | 0x05, 0];
    t.extend_from_slice(&(s.len() as u16).to_be_bytes());
    t.extend(s);
    t
}

/// Parse an iSCSI TransportID of format 01b into (initiator port, initiator name).
fn parse_transport_id(t: &[u8]) -> Option<(String, String)> {
    let f = Fields(t);
    if f.u8(0) != 0x45 {
        return None;
    }
    let len = usize::from(f.be16(2));
    let raw = f.slice(4, len);
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = std::str::from_utf8(raw.get(..end)?)
        .ok()?
        .to_ascii_lowercase();
    let name = s.split(",i,0x").next()?.to_string();
    if !s.contains(",i,0x") || name.is_empty() {
        return None;
    }
    Some((s, name))
}

impl LogicalUnit {
    /// Nexus ids covered by a registration.
    fn nexus_ids_of(&self, reg: &Registration) -> Vec<u64> {
        self.nexuses.ids_where(|port, rel| reg.matches(port, rel))
    }

    fn ua_registrations(&mut self, regs: &[Registration], except: u64, asc: Asc) {
        let ids: Vec<u64> = regs.iter().flat_map(|r| self.nexus_ids_of(r)).collect();
        for id in ids {
            if id != except {
                self.nexuses.push(id, asc);
            }
        }
    }

    pub(crate) fn pr_in(&self, sa: u8, cdb: Fields<'_>) -> Exec {
        let alloc = usize::from(cdb.be16(7));
        let pr = &self.pr;
        let mut d = Vec::new();
        d.extend_from_slice(&pr.generation.to_be_bytes());
        match sa {
            0 => {
                d.extend_from_slice(&((pr.registrations.len() * 8) as u32).to_be_bytes());
                for r in &pr.registrations {
                    d.extend_from_slice(&r.key.to_be_bytes());
                }
            }
            1 => match &pr.reservation {
                None => d.extend_from_slice(&[0, 0, 0, 0]),
                Some(res) => {
                    d.extend_from_slice(&16u32.to_be_bytes());
                    d.extend_from_slice(&pr.reservation_key().to_be_bytes());
                    d.extend_from_slice(&[0, 0, 0, 0, 0, res.pr_type as u8, 0, 0]);
                }
            },
            2 => {
                d = vec![0u8; 8];
                d[1] = 8;
                d[2] = 0x10 | 0x04 | 0x01; // CRH, ATP_C, PTPL_C
                d[3] = 0x80 | u8::from(pr.aptpl); // TMV, PTPL_A
                d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
                d[5] = 0x01; // EX_AC_AR
            }
            3 => {
                let mut body = Vec::new();
                for r in &pr.registrations {
                    let holder = pr.is_holder(&r.initiator_port, r.relative_port_id);
                    let mut e = vec![0u8; 24];
                    put_be(&mut e, 0, &r.key.to_be_bytes());
                    e[12] = if r.all_tg_pt { 0x02 } else { 0 } | u8::from(holder);
                    if holder {
                        e[13] = pr
                            .reservation
                            .as_ref()
                            .map(|x| x.pr_type as u8)
                            .unwrap_or(0);
                    }
                    if !r.all_tg_pt {
                        put_be(&mut e, 18, &r.relative_port_id.to_be_bytes());
                    }
                    let tid = transport_id(r);
                    put_be(&mut e, 20, &(tid.len() as u32).to_be_bytes());
                    e.extend(tid);
                    body.extend(e);
                }
                d.extend_from_slice(&(body.len() as u32).to_be_bytes());
                d.extend(body);
            }
            _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
        }
        Ok(Task::good(truncate(d, alloc)))
    }

    fn done(&self, changed: bool, aborts: Vec<u64>) -> Task {
        Task::done(Response {
            pr_state_changed: changed,
            abort_nexuses: aborts,
            ..Response::good(Bytes::new())
        })
    }

    /// Remove the registration at `idx` with the side effects on the reservation.
    fn unregister(&mut self, idx: usize, issuer: u64) {
        if idx >= self.pr.registrations.len() {
            return;
        }
        let reg = self.pr.registrations.remove(idx);
        let Some(res) = self.pr.reservation.clone() else {
            return;
        };
        if res.pr_type.all_registrants() {
            if self.pr.registrations.is_empty() {
                self.pr.reservation = None;
            }
            return;
        }
        let was_holder = res.holder.as_ref().is_some_and(|(p, r)| reg.matches(p, *r));
        if was_holder {
            self.pr.reservation = None;
            if res.pr_type.registrants_access() {
                let others = self.pr.registrations.clone();
                self.ua_registrations(&others, issuer, Asc::RESERVATIONS_RELEASED);
            }
        }
    }

    /// Remove every registration with `key` (except the issuer's); returns them.
    fn remove_key(&mut self, key: u64, issuer: &Nexus) -> Vec<Registration> {
        let (removed, kept): (Vec<Registration>, Vec<Registration>) =
            std::mem::take(&mut self.pr.registrations)
                .into_iter()
                .partition(|r| {
                    r.key == key && !r.matches(&issuer.initiator_port, issuer.relative_port_id)
                });
        self.pr.registrations = kept;
        removed
    }

    pub(crate) fn pr_out(&mut self, nexus: &Nexus, sa: u8, cdb: Fields<'_>, cmd: &Command) -> Exec {
        let scope = cdb.u8(2) >> 4;
        let type_raw = cdb.u8(2) & 0x0F;
        let plen = cdb.be32(5) as usize;
        let data = cmd
            .data_out
            .get(..plen.min(cmd.data_out.len()))
            .unwrap_or(&[]);
        let p = Fields(data);
        if data.len() > 20 && p.u8(20) & 0x08 != 0 && sa != SA_REGISTER_AND_MOVE {
            return Err(Sense::invalid_param(20, Some(3)).into()); // SPEC_I_PT unsupported
        }
        let len_ok = if sa == SA_REGISTER_AND_MOVE {
            plen >= 24 && data.len() == plen && plen >= 24 + p.be32(20) as usize
        } else {
            plen == 24 && data.len() == 24
        };
        if !len_ok {
            return Err(Sense::illegal(Asc::PARAMETER_LIST_LENGTH_ERROR).into());
        }
        let rk = p.be64(0);
        let sark = p.be64(8);
        let all_tg_pt = p.u8(20) & 0x04 != 0;
        let aptpl = p.u8(20) & 0x01 != 0;
        let port = nexus.initiator_port.as_str();
        let rel = nexus.relative_port_id;
        let my_idx = self
            .pr
            .registrations
            .iter()
            .position(|r| r.matches(port, rel));
        let my_key = my_idx
            .and_then(|i| self.pr.registrations.get(i))
            .map(|r| r.key);
        let need_type = || -> Result<PrType, Fail> {
            if scope != 0 {
                return Err(Sense::invalid_cdb(2, Some(7)).into());
            }
            PrType::from_u8(type_raw).ok_or_else(|| Sense::invalid_cdb(2, Some(3)).into())
        };
        match sa {
            SA_REGISTER | SA_REGISTER_AND_IGNORE => {
                match my_idx {
                    None => {
                        if sa == SA_REGISTER && rk != 0 {
                            return Err(Fail::Conflict);
                        }
                        if sark == 0 {
                            return Ok(self.done(false, vec![]));
                        }
                        self.pr.registrations.push(Registration {
                            key: sark,
                            initiator_port: nexus.initiator_port.clone(),
                            initiator_name: nexus.initiator_name.clone(),
                            relative_port_id: rel,
                            all_tg_pt,
                        });
                    }
                    Some(i) => {
                        if sa == SA_REGISTER && Some(rk) != my_key {
                            return Err(Fail::Conflict);
                        }
                        if sark == 0 {
                            self.unregister(i, nexus.id);
                        } else if let Some(r) = self.pr.registrations.get_mut(i) {
                            r.key = sark;
                        }
                    }
                }
                self.pr.aptpl = aptpl;
                self.pr.generation = self.pr.generation.wrapping_add(1);
                Ok(self.done(true, vec![]))
            }
            SA_RESERVE => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let t = need_type()?;
                match &self.pr.reservation {
                    None => {
                        let holder = if t.all_registrants() {
                            None
                        } else {
                            Some((port.to_string(), rel))
                        };
                        self.pr.reservation = Some(Reservation { pr_type: t, holder });
                        Ok(self.done(true, vec![]))
                    }
                    Some(r) if r.pr_type == t && self.pr.is_holder(port, rel) => {
                        Ok(self.done(false, vec![]))
                    }
                    Some(_) => Err(Fail::Conflict),
                }
            }
            SA_RELEASE => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let Some(res) = self.pr.reservation.clone() else {
                    return Ok(self.done(false, vec![]));
                };
                if !self.pr.is_holder(port, rel) {
                    return Ok(self.done(false, vec![]));
                }
                if scope != 0 || type_raw != res.pr_type as u8 {
                    return Err(Sense::illegal(Asc::INVALID_RELEASE_OF_PR).into());
                }
                self.pr.reservation = None;
                if res.pr_type.registrants_access() {
                    let regs = self.pr.registrations.clone();
                    self.ua_registrations(&regs, nexus.id, Asc::RESERVATIONS_RELEASED);
                }
                Ok(self.done(true, vec![]))
            }
            SA_CLEAR => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let regs = std::mem::take(&mut self.pr.registrations);
                self.pr.reservation = None;
                self.ua_registrations(&regs, nexus.id, Asc::RESERVATIONS_PREEMPTED);
                self.pr.generation = self.pr.generation.wrapping_add(1);
                Ok(self.done(true, vec![]))
            }
            SA_PREEMPT | SA_PREEMPT_AND_ABORT => {
                if my_key != Some(rk) {
                    return Err(Fail::Conflict);
                }
                let t = need_type()?;
                let res = self.pr.reservation.clone();
                let removed = match res {
                    None => {
                        if sark == 0 {
                            return Err(Sense::invalid_param(8, None).into());
                        }
                        let removed = self.remove_key(sark, nexus);
                        if removed.is_empty() {
                            return Err(Fail::Conflict);
                        }
                        removed
                    }
                    Some(r) if r.pr_type.all_registrants() => {
                        if sark == 0 {
                            let (mine, others): (Vec<_>, Vec<_>) =
                                std::mem::take(&mut self.pr.registrations)
                                    .into_iter()
                                    .partition(|x| x.matches(port, rel));
                            self.pr.registrations = mine;
                            self.pr.reservation = Some(Reservation {
                                pr_type: t,
                                holder: if t.all_registrants() {
                                    None
                                } else {
                                    Some((port.to_string(), rel))
                                },
                            });
                            others
                        } else {
                            let removed = self.remove_key(sark, nexus);
                            if removed.is_empty() {
                                return Err(Fail::Conflict);
                            }
                            if self.pr.registrations.is_empty() {
                                self.pr.reservation = None;
                            }
                            removed
                        }
                    }
                    Some(r) => {
                        let holder_key = self.pr.reservation_key();
                        if sark == 0 {
                            return Err(Sense::invalid_param(8, None).into());
                        }
                        let removed = self.remove_key(sark, nexus);
                        if sark == holder_key {
                            self.pr.reservation = Some(Reservation {
                                pr_type: t,
                                holder: if t.all_registrants() {
                                    None
                                } else {
                                    Some((port.to_string(), rel))
                                },
                            });
                            if t != r.pr_type {
                                let others: Vec<Registration> = self
                                    .pr
                                    .registrations
                                    .iter()
                                    .filter(|x| !x.matches(port, rel))
                                    .cloned()
                                    .collect();
                                self.ua_registrations(
                                    &others,
                                    nexus.id,
                                    Asc::RESERVATIONS_RELEASED,
                                );
                            }
                        } else if removed.is_empty() {
                            return Err(Fail::Conflict);
                        }
                        removed
                    }
                };
                self.ua_registrations(&removed, nexus.id, Asc::REGISTRATIONS_PREEMPTED);
                let aborts = if sa == SA_PREEMPT_AND_ABORT {
                    let mut ids: Vec<u64> = removed
                        .iter()
                        .flat_map(|r| self.nexus_ids_of(r))
                        .filter(|id| *id != nexus.id)
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids
                } else {
                    vec![]
                };
                self.pr.generation = self.pr.generation.wrapping_add(1);
                Ok(self.done(true, aborts))
            }
            SA_REGISTER_AND_MOVE => self.register_and_move(nexus, rk, sark, p, all_tg_pt),
            _ => Err(Sense::invalid_cdb(1, Some(4)).into()),
        }
    }

    fn register_and_move(
        &mut self,
        nexus: &Nexus,
        rk: u64,
        sark: u64,
        p: Fields<'_>,
        all_tg_pt: bool,
    ) -> Exec {
        let port = nexus.initiator_port.as_str();
        let rel = nexus.relative_port_id;
        let Some(my_idx) = self
            .pr
            .registrations
            .iter()
            .position(|r| r.matches(port, rel))
        else {
            return Err(Fail::Conflict);
        };
        if self.pr.registrations.get(my_idx).map(|r| r.key) != Some(rk) {
            return Err(Fail::Conflict);
        }
        let Some(res) = self.pr.reservation.clone() else {
            return Err(Fail::Conflict);
        };
        if res.pr_type.all_registrants() {
            return Err(Sense::invalid_cdb(1, Some(4)).into());
        }
        if !self.pr.is_holder(port, rel) {
            return Err(Fail::Conflict);
        }
        if all_tg_pt {
            return Err(Sense::invalid_param(20, Some(2)).into());
        }
        if sark == 0 {
            return Err(Sense::invalid_param(8, None).into());
        }
        let unreg = p.u8(17) & 0x02 != 0;
        let aptpl = p.u8(17) & 0x01 != 0;
        let dest_rel = p.be16(18);
        let tid_len = p.be32(20) as usize;
        let Some((dest_port, dest_name)) = parse_transport_id(p.slice(24, tid_len)) else {
            return Err(Sense::invalid_param(24, None).into());
        };
        if dest_port == port && dest_rel == rel {
            return Err(Sense::invalid_param(24, None).into());
        }
        match self
            .pr
            .registrations
            .iter_mut()
            .find(|r| r.matches(&dest_port, dest_rel))
        {
            Some(r) => r.key = sark,
            None => self.pr.registrations.push(Registration {
                key: sark,
                initiator_port: dest_port.clone(),
                initiator_name: dest_name,
                relative_port_id: dest_rel,
                all_tg_pt: false,
            }),
        }
        self.pr.reservation = Some(Reservation {
            pr_type: res.pr_type,
            holder: Some((dest_port, dest_rel)),
        });
        if unreg {
            if let Some(i) = self
                .pr
                .registrations
                .iter()
                .position(|r| r.matches(port, rel))
            {
                self.pr.registrations.remove(i);
            }
        }
        self.pr.aptpl = aptpl;
        self.pr.generation = self.pr.generation.wrapping_add(1);
        Ok(self.done(true, vec![]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_id_round_trip() {
        let r = Registration {
            key: 1,
            initiator_port: "iqn.2000-01.x:y,i,0x23d000000001".into(),
            initiator_name: "iqn.2000-01.x:y".into(),
            relative_port_id: 1,
            all_tg_pt: false,
        };
        let t = transport_id(&r);
        assert_eq!(t[0], 0x45);
        assert_eq!(t.len() % 4, 0);
        assert_eq!(
            parse_transport_id(&t),
            Some((r.initiator_port.clone(), r.initiator_name.clone()))
        );
        assert_eq!(parse_transport_id(&[0x05, 0, 0, 4, b'a', 0, 0, 0]), None);
    }
}
