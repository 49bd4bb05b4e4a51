//! Persistent reservation state as plain data (registrations, the reservation, the
//! generation counter, APTPL), with a small versioned binary encoding so the gateway
//! can store it on replicated storage and restore it after a failover.

use thiserror::Error;

/// Persistent reservation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PrType {
    /// Write Exclusive.
    WriteExclusive = 1,
    /// Exclusive Access.
    ExclusiveAccess = 3,
    /// Write Exclusive – Registrants Only.
    WriteExclusiveRegistrantsOnly = 5,
    /// Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly = 6,
    /// Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants = 7,
    /// Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    /// Decode the TYPE field.
    pub fn from_u8(v: u8) -> Option<PrType> {
        Some(match v {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// All-registrants types: every registrant is a reservation holder.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants-only or all-registrants types (registered nexuses get access).
    pub fn registrants_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Exclusive access types (reads by non-holders conflict too).
    pub fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// One registered I_T nexus (or, with `all_tg_pt`, one initiator port on all target ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Reservation key.
    pub key: u64,
    /// Initiator port name (`"iqn...,i,0x<isid>"`).
    pub initiator_port: String,
    /// Initiator device name (for TransportIDs).
    pub initiator_name: String,
    /// Relative target port id the registration was made through.
    pub relative_port_id: u16,
    /// Registered through ALL_TG_PT: valid on every target port.
    pub all_tg_pt: bool,
}

impl Registration {
    /// Does this registration cover the I_T nexus (initiator port, target port)?
    pub fn matches(&self, initiator_port: &str, relative_port_id: u16) -> bool {
        self.initiator_port == initiator_port
            && (self.all_tg_pt || self.relative_port_id == relative_port_id)
    }
}

/// The persistent reservation, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Type.
    pub pr_type: PrType,
    /// Holding I_T nexus (initiator port, relative target port); None for all-registrants types.
    pub holder: Option<(String, u16)>,
}

/// Complete persistent reservation state of one logical unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrState {
    /// PRGENERATION.
    pub generation: u32,
    /// Activate persist through power loss, as last requested.
    pub aptpl: bool,
    /// Registrations in registration order.
    pub registrations: Vec<Registration>,
    /// The reservation.
    pub reservation: Option<Reservation>,
}

/// Errors decoding a stored [`PrState`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrDecodeError {
    /// The buffer ended early.
    #[error("persistent reservation state is truncated")]
    Truncated,
    /// Not a PR state blob.
    #[error("persistent reservation state has a bad magic number")]
    BadMagic,
    /// Written by a newer version.
    #[error("persistent reservation state version {0} is not supported")]
    UnsupportedVersion(u8),
    /// A name is not UTF-8.
    #[error("persistent reservation state contains a name that is not UTF-8")]
    BadUtf8,
    /// Unknown reservation type.
    #[error("persistent reservation state has unknown reservation type {0}")]
    BadType(u8),
    /// Data after the end.
    #[error("persistent reservation state has trailing bytes")]
    TrailingBytes,
    /// Fields that contradict each other.
    #[error("persistent reservation state is inconsistent: {0}")]
    Inconsistent(&'static str),
}

const MAGIC: &[u8; 4] = b"SCPR";
const VERSION: u8 = 1;

impl PrState {
    /// The registration covering an I_T nexus.
    pub fn registration(&self, initiator_port: &str, rel: u16) -> Option<&Registration> {
        self.registrations
            .iter()
            .find(|r| r.matches(initiator_port, rel))
    }

    /// Is the I_T nexus a reservation holder?
    pub fn is_holder(&self, initiator_port: &str, rel: u16) -> bool {
        let Some(res) = &self.reservation else {
            return false;
        };
        match &res.holder {
            None => self.registration(initiator_port, rel).is_some(),
            Some((hp, hr)) => self
                .registration(hp, *hr)
                .is_some_and(|reg| reg.matches(initiator_port, rel)),
        }
    }

    /// Key reported for the reservation (0 for all-registrants types).
    pub fn reservation_key(&self) -> u64 {
        match self.reservation.as_ref().and_then(|r| r.holder.as_ref()) {
            Some((p, r)) => self.registration(p, *r).map(|x| x.key).unwrap_or(0),
            None => 0,
        }
    }

    /// Encode (versioned, self-describing enough to be validated on read).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn put_str(out: &mut Vec<u8>, s: &str) {
            let b = s.as_bytes();
            let n = b.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(b.get(..n).unwrap_or(&[]));
        }
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(u8::from(self.aptpl));
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&(self.registrations.len() as u32).to_be_bytes());
        for r in &self.registrations {
            out.extend_from_slice(&r.key.to_be_bytes());
            out.extend_from_slice(&r.relative_port_id.to_be_bytes());
            out.push(u8::from(r.all_tg_pt));
            put_str(&mut out, &r.initiator_port);
            put_str(&mut out, &r.initiator_name);
        }
        match &self.reservation {
            None => out.push(0),
            Some(res) => {
                out.push(1);
                out.push(res.pr_type as u8);
                match &res.holder {
                    None => out.push(0),
                    Some((p, rel)) => {
                        out.push(1);
                        put_str(&mut out, p);
                        out.extend_from_slice(&rel.to_be_bytes());
                    }
                }
            }
        }
        out
    }

    /// Decode and validate what [`PrState::to_bytes`] wrote.
    pub fn from_bytes(buf: &[u8]) -> Result<PrState, PrDecodeError> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(PrDecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(PrDecodeError::UnsupportedVersion(version));
        }
        let aptpl = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(PrDecodeError::Inconsistent("APTPL flag")),
        };
        let generation = r.u32()?;
        let n = r.u32()? as usize;
        // Each registration takes at least 15 bytes: bound the allocation by the input.
        if n > buf.len() / 15 {
            return Err(PrDecodeError::Truncated);
        }
        let mut registrations = Vec::with_capacity(n);
        for _ in 0..n {
            let key = r.u64()?;
            let relative_port_id = r.u16()?;
            let all_tg_pt = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(PrDecodeError::Inconsistent("ALL_TG_PT flag")),
            };
            let initiator_port = r.string()?;
            let initiator_name = r.string()?;
            if key == 0 {
                return Err(PrDecodeError::Inconsistent("registration with key 0"));
            }
            registrations.push(Registration {
                key,
                initiator_port,
                initiator_name,
                relative_port_id,
                all_tg_pt,
            });
        }
        let reservation = match r.u8()? {
            0 => None,
            1 => {
                let t = r.u8()?;
                let pr_type = PrType::from_u8(t).ok_or(PrDecodeError::BadType(t))?;
                let holder = match r.u8()? {
                    0 => None,
                    1 => {
                        let p = r.string()?;
                        let rel = r.u16()?;
                        Some((p, rel))
                    }
                    _ => return Err(PrDecodeError::Inconsistent("holder flag")),
                };
                Some(Reservation { pr_type, holder })
            }
            _ => return Err(PrDecodeError::Inconsistent("reservation flag")),
        };
        if r.pos != buf.len() {
            return Err(PrDecodeError::TrailingBytes);
        }
        let st = PrState {
            generation,
            aptpl,
            registrations,
            reservation,
        };
        if let Some(res) = &st.reservation {
            match (&res.holder, res.pr_type.all_registrants()) {
                (None, true) if !st.registrations.is_empty() => {}
                (Some((p, rel)), false) if st.registration(p, *rel).is_some() => {}
                _ => return Err(PrDecodeError::Inconsistent("reservation holder")),
            }
        }
        Ok(st)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PrDecodeError> {
        let end = self.pos.checked_add(n).ok_or(PrDecodeError::Truncated)?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(PrDecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PrDecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn be(&mut self, n: usize) -> Result<u64, PrDecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }
    fn u16(&mut self) -> Result<u16, PrDecodeError> {
        Ok(self.be(2)? as u16)
    }
    fn u32(&mut self) -> Result<u32, PrDecodeError> {
        Ok(self.be(4)? as u32)
    }
    fn u64(&mut self) -> Result<u64, PrDecodeError> {
        self.be(8)
    }
    fn string(&mut self) -> Result<String, PrDecodeError> {
        let n = usize::from(self.u16()?);
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| PrDecodeError::BadUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> PrState {
        PrState {
            generation: 7,
            aptpl: true,
            registrations: vec![
                Registration {
                    key: 0xabc,
                    initiator_port: "iqn.a,i,0x1".into(),
                    initiator_name: "iqn.a".into(),
                    relative_port_id: 1,
                    all_tg_pt: false,
                },
                Registration {
                    key: 0xdef,
                    initiator_port: "iqn.b,i,0x2".into(),
                    initiator_name: "iqn.b".into(),
                    relative_port_id: 2,
                    all_tg_pt: true,
                },
            ],
            reservation: Some(Reservation {
                pr_type: PrType::WriteExclusive,
                holder: Some(("iqn.a,i,0x1".into(), 1)),
            }),
        }
    }

    #[test]
    fn round_trip_and_holder() {
        let s = sample();
        assert_eq!(PrState::from_bytes(&s.to_bytes()), Ok(s.clone()));
        assert!(s.is_holder("iqn.a,i,0x1", 1));
        assert!(!s.is_holder("iqn.a,i,0x1", 2));
        assert!(!s.is_holder("iqn.b,i,0x2", 2));
        assert_eq!(s.reservation_key(), 0xabc);
        assert!(s.registration("iqn.b,i,0x2", 9).is_some());
    }

    #[test]
    fn rejects_garbage() {
        let b = sample().to_bytes();
        assert_eq!(
            PrState::from_bytes(&b[..b.len() - 1]),
            Err(PrDecodeError::Truncated)
        );
        let mut t = b.clone();
        t.push(0);
        assert_eq!(PrState::from_bytes(&t), Err(PrDecodeError::TrailingBytes));
        assert_eq!(PrState::from_bytes(b"XXXX"), Err(PrDecodeError::BadMagic));
        let mut v = b.clone();
        v[4] = 9;
        assert_eq!(
            PrState::from_bytes(&v),
            Err(PrDecodeError::UnsupportedVersion(9))
        );
        let mut orphan = sample();
        orphan.registrations.remove(0);
        assert!(matches!(
            PrState::from_bytes(&orphan.to_bytes()),
            Err(PrDecodeError::Inconsistent(_))
        ));
    }

    fn arb_reg() -> impl Strategy<Value = Registration> {
        (
            1u64..,
            "[a-z0-9.:,]{0,40}",
            "[a-z0-9.:]{0,40}",
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(
                |(key, initiator_port, initiator_name, relative_port_id, all_tg_pt)| Registration {
                    key,
                    initiator_port,
                    initiator_name,
                    relative_port_id,
                    all_tg_pt,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(gen in any::<u32>(), aptpl in any::<bool>(),
                           regs in proptest::collection::vec(arb_reg(), 0..6),
                           t in prop::sample::select(vec![7u8, 8])) {
            let reservation = if regs.is_empty() { None } else {
                Some(Reservation { pr_type: PrType::from_u8(t).unwrap_or(PrType::WriteExclusiveAllRegistrants), holder: None })
            };
            let s = PrState { generation: gen, aptpl, registrations: regs, reservation };
            prop_assert_eq!(PrState::from_bytes(&s.to_bytes()), Ok(s));
        }

        #[test]
        fn prop_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PrState::from_bytes(&b);
        }
    }
}
