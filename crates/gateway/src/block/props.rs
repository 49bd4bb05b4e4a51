//! What the SCSI model needs to know about a backing store ([`DeviceProps`]), from an open
//! [`BlockDevice`] or from a [`Probe`] that never opens it.
//!
//! A LUN on a DRBD resource must not open its device while the node is Secondary: with
//! DRBD 9 auto-promote, opening it read-write would promote it. Such a LUN is built from a
//! probe (stat and sysfs only) and opened later, when it may be served.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::device::BlockDevice;
use super::sys;

/// Geometry and capabilities of a backing store.
pub trait DeviceProps {
    fn size_bytes(&self) -> u64;
    fn logical_block_size(&self) -> u32;
    fn has_volatile_cache(&self) -> bool;
    fn supports_discard(&self) -> bool;
    fn is_read_only(&self) -> bool;
    fn is_rotational(&self) -> bool;
}

impl DeviceProps for BlockDevice {
    fn size_bytes(&self) -> u64 {
        BlockDevice::size_bytes(self)
    }
    fn logical_block_size(&self) -> u32 {
        BlockDevice::logical_block_size(self)
    }
    fn has_volatile_cache(&self) -> bool {
        BlockDevice::has_volatile_cache(self)
    }
    fn supports_discard(&self) -> bool {
        BlockDevice::supports_discard(self)
    }
    fn is_read_only(&self) -> bool {
        BlockDevice::is_read_only(self)
    }
    fn is_rotational(&self) -> bool {
        BlockDevice::is_rotational(self)
    }
}

/// Properties read without opening: `stat`, and `/sys/dev/block/M:m` for devices. They
/// match what [`BlockDevice::open`] finds for block devices; for files they assume
/// buffered-or-direct I/O with 512-byte blocks and a volatile cache (the safe side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub size: u64,
    pub lbs: u32,
    pub volatile_cache: bool,
    pub discard: bool,
    pub rotational: bool,
    pub read_only: bool,
}

impl Probe {
    /// Probes `path`. A missing file counts as `create_size` bytes (it is created on open).
    pub fn of(path: &Path, create_size: Option<u64>, read_only: bool) -> io::Result<Probe> {
        let meta = match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create_size.is_some() => {
                return Ok(Probe {
                    size: create_size.unwrap_or(0),
                    lbs: 512,
                    volatile_cache: true,
                    discard: true,
                    rotational: false,
                    read_only,
                })
            }
            r => r?,
        };
        if meta.file_type().is_block_device() {
            let dev = meta.rdev();
            let (maj, min) = sys::major_minor(dev);
            let sectors: u64 = std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/size"))?
                .trim()
                .parse()
                .map_err(|_| io::Error::other("unreadable sysfs size"))?;
            let lbs = sys::queue_attr_u64(dev, "logical_block_size")
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| v.is_power_of_two() && (512..=65536).contains(v))
                .unwrap_or(512);
            return Ok(Probe {
                size: sectors.saturating_mul(512),
                lbs,
                volatile_cache: sys::queue_attr(dev, "write_cache").as_deref()
                    != Some("write through"),
                discard: sys::queue_attr_u64(dev, "discard_max_bytes").unwrap_or(0) > 0,
                rotational: sys::queue_attr_u64(dev, "rotational") == Some(1),
                read_only,
            });
        }
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file or block device"));
        }
        Ok(Probe {
            size: meta.len().max(create_size.unwrap_or(0)),
            lbs: 512,
            volatile_cache: true,
            discard: true,
            rotational: sys::queue_attr_u64(meta.dev(), "rotational") == Some(1),
            read_only,
        })
    }
}

impl DeviceProps for Probe {
    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn logical_block_size(&self) -> u32 {
        self.lbs
    }
    fn has_volatile_cache(&self) -> bool {
        self.volatile_cache
    }
    fn supports_discard(&self) -> bool {
        self.discard
    }
    fn is_read_only(&self) -> bool {
        self.read_only
    }
    fn is_rotational(&self) -> bool {
        self.rotational
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_of_file_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.img");
        let missing = Probe::of(&p, Some(1 << 20), false).expect("missing with size");
        assert_eq!((missing.size, missing.lbs), (1 << 20, 512));
        assert!(Probe::of(&p, None, false).is_err());
        std::fs::write(&p, vec![0u8; 4096]).expect("write");
        let f = Probe::of(&p, None, true).expect("file");
        assert_eq!(f.size_bytes(), 4096);
        assert!(f.is_read_only());
        assert!(Probe::of(dir.path(), None, false).is_err());
    }
}
