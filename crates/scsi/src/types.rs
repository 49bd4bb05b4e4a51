//! Plain input types of the device model: LUN configuration, the target port a LUN is
//! reached through, the I_T nexus a command arrives on, and the command itself.
//!
//! They carry no behaviour; the transport fills them in and the device model reads them.

use bytes::Bytes;

/// Static configuration of one logical unit. Identity fields (serial, NAA) must come
/// from configuration only so that a failover presents the very same LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Physical block size of the backing store in bytes (a power-of-two multiple of
    /// `block_size`), reported as LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT; 0 = same as
    /// `block_size`.
    pub physical_block_size: u32,
    /// Capacity in logical blocks.
    pub num_blocks: u64,
    /// T10 vendor identification (up to 8 ASCII characters).
    pub vendor: String,
    /// Product identification (up to 16 ASCII characters).
    pub product: String,
    /// Product revision level (up to 4 ASCII characters).
    pub revision: String,
    /// Unit serial number (VPD page 0x80).
    pub serial: String,
    /// NAA type 6 (IEEE registered extended) designator, VPD page 0x83.
    pub naa: [u8; 16],
    /// A volatile write cache is present and enabled (WCE). FUA and SYNCHRONIZE CACHE
    /// must then reach the medium; the initiator may clear WCE through MODE SELECT, in
    /// which case every write is issued with `fua: true`.
    pub write_cache: bool,
    /// Thin provisioning: LBPME, LBPU, LBPWS, LBPWS10, LBPRZ, UNMAP, WRITE SAME with UNMAP.
    /// The backend must make discarded ranges read back as zeros (LBPRZ is reported).
    pub unmap: bool,
    /// The medium is write protected (WP bit; writes fail with DATA PROTECT).
    pub read_only: bool,
    /// MAXIMUM TRANSFER LENGTH in blocks (block limits VPD); 0 means "derive a safe cap".
    pub max_transfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH in blocks.
    pub optimal_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks (0 = no limit). Keep it below 65536 unless
    /// `max_transfer_blocks` is at least 65536: libiscsi's WriteSame16.Unmap test writes
    /// that many blocks with one WRITE(16) when the limit allows it.
    pub max_write_same_blocks: u64,
    /// Rotating medium; false reports a MEDIUM ROTATION RATE of 1 (non-rotating).
    pub rotational: bool,
}

impl LunConfig {
    /// log2(physical / logical block size), 0 when unknown or not a power-of-two multiple.
    pub fn lbppb_exponent(&self) -> u8 {
        let (l, p) = (self.block_size.max(1), self.physical_block_size);
        if p <= l || p % l != 0 || !(p / l).is_power_of_two() {
            return 0;
        }
        (p / l).trailing_zeros().min(15) as u8
    }
}

impl Default for LunConfig {
    fn default() -> Self {
        LunConfig {
            block_size: 512,
            physical_block_size: 0,
            num_blocks: 0,
            vendor: "LINUX".into(),
            product: "iscsi-gateway".into(),
            revision: "0001".into(),
            serial: String::new(),
            naa: [0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            write_cache: true,
            unmap: true,
            read_only: false,
            max_transfer_blocks: 2048,
            optimal_transfer_blocks: 256,
            max_unmap_blocks: 1024 * 1024,
            max_unmap_descriptors: 256,
            max_write_same_blocks: 65535,
            rotational: false,
        }
    }
}

/// The SCSI target port a LUN is reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPort {
    /// Target device name (for iSCSI the IQN). Reported as the target device SCSI name
    /// string and, suffixed with `",t,0x<relative_port_id as 4 hex digits>"`, as the
    /// target port name.
    pub target_name: String,
    /// RELATIVE TARGET PORT IDENTIFIER (nonzero).
    pub relative_port_id: u16,
    /// TARGET PORT GROUP reported in VPD 0x83 and REPORT TARGET PORT GROUPS.
    pub port_group: u16,
}

/// One I_T nexus (for iSCSI: one session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexus {
    /// Opaque, unique per I_T nexus for the lifetime of the LUN.
    pub id: u64,
    /// Initiator port name, e.g. `"iqn.1993-08.org.debian:01:abc,i,0x23d000000001"`.
    pub initiator_port: String,
    /// Initiator device name without the port suffix.
    pub initiator_name: String,
    /// Relative port id of the target port the nexus uses.
    pub relative_port_id: u16,
}

/// SAM task attribute of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskAttr {
    /// SIMPLE.
    #[default]
    Simple,
    /// ORDERED.
    Ordered,
    /// HEAD OF QUEUE.
    HeadOfQueue,
    /// ACA (not supported: NACA is never accepted, so this is rejected).
    Aca,
}

/// A SCSI command as handed over by the transport.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    /// The CDB; may be longer than the command's CDB length (padding is ignored).
    pub cdb: &'a [u8],
    /// Data-out received. If longer than the CDB asks for, the excess is ignored; if
    /// shorter, commands that need the data fail with ILLEGAL REQUEST / INVALID FIELD IN
    /// COMMAND INFORMATION UNIT (0E/03) and nothing is written.
    pub data_out: Bytes,
    /// The initiator offered more data-out than the transport accepted (`data_out` was
    /// cut). Commands that need an exact data-out length then fail.
    pub data_out_too_large: bool,
    /// Expected data-in transfer length announced by the initiator (informational; the
    /// transport truncates `data_in` to it and computes residuals).
    pub expected_data_in_len: u32,
    /// Task attribute.
    pub attr: TaskAttr,
}

impl<'a> Command<'a> {
    /// A command without data-out, SIMPLE attribute.
    pub fn new(cdb: &'a [u8]) -> Self {
        Command {
            cdb,
            data_out: Bytes::new(),
            data_out_too_large: false,
            expected_data_in_len: u32::MAX,
            attr: TaskAttr::Simple,
        }
    }

    /// A command with data-out, SIMPLE attribute.
    pub fn with_data(cdb: &'a [u8], data_out: Bytes) -> Self {
        Command {
            data_out,
            ..Command::new(cdb)
        }
    }
}

/// Kind of reset delivered to a logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// LOGICAL UNIT RESET task management function (UA 29/03).
    LunReset,
    /// TARGET WARM/COLD RESET (UA 29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED).
    TargetReset,
    /// Power on / process restart (UA 29/01).
    PowerOn,
}
