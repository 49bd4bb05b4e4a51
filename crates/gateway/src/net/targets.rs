//! Opens every configured LUN and builds the runtime side of each target: the SCSI device
//! model (`scsi::ScsiTarget`) and the block backends, keyed by target name.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use scsi::{LogicalUnit, LunConfig, ScsiTarget, TargetPort};
use tokio::sync::watch;
use tracing::info;

use crate::block::{DeviceProps, Probe};
use crate::config::{Config, LunSpec, TargetSpec};
use crate::drbd::state::Verdict;
use crate::drbd::watcher;
use crate::net::exec::{LunBackend, TargetRuntime};
use crate::net::lun_gate::{flush_before_close, follow_drbd, open_waiting};
use crate::state::PrStore;

/// Relative target port id of the single portal group this gateway exposes. The same on
/// every node, so a failover presents the same port identity.
pub const RELATIVE_PORT_ID: u16 = 1;

/// Largest transfer, in bytes, one command may carry (VPD 0xB0 MAXIMUM TRANSFER LENGTH and
/// the iSCSI layer's bound on write data it will accept).
pub const MAX_TRANSFER_BYTES: u32 = 8 << 20;

/// Every target this gateway serves.
pub struct TargetSet {
    targets: HashMap<String, Arc<TargetRuntime>>,
}

impl TargetSet {
    /// Opens every LUN of every target; fails with the path and reason of the first that
    /// cannot be opened.
    ///
    /// LUNs with a `drbd_resource` are not opened here: they start not ready, and a task
    /// per LUN (`lun_gate::follow_drbd`, needs a tokio runtime) opens them when the
    /// resource's watcher says this node may write.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let mut targets = HashMap::new();
        let lock_wait = Duration::from_secs(u64::from(config.server.lock_wait_secs));
        let mut watchers: HashMap<String, watch::Receiver<Verdict>> = HashMap::new();
        for spec in &config.targets {
            let rt = Arc::new(
                open_target(spec, &config.server.state_dir, lock_wait)
                    .with_context(|| format!("target {}", spec.iqn))?,
            );
            for lun in &spec.luns {
                let Some(res) = &lun.drbd_resource else {
                    continue;
                };
                let verdicts = watchers
                    .entry(res.clone())
                    .or_insert_with(|| {
                        watcher::spawn(
                            res.clone(),
                            config.drbd.drbdsetup.clone(),
                            config.drbd.auto_promote,
                        )
                    })
                    .clone();
                tokio::spawn(follow_drbd(
                    rt.clone(),
                    u64::from(lun.lun),
                    lun.clone(),
                    verdicts,
                ));
            }
            targets.insert(spec.iqn.clone(), rt);
        }
        Ok(TargetSet { targets })
    }

    /// No targets (for tests of the surrounding plumbing).
    pub fn empty() -> Self {
        TargetSet {
            targets: HashMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<TargetRuntime>> {
        self.targets.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<TargetRuntime>> {
        self.targets.values()
    }

    /// Flushes every served LUN (see [`flush_before_close`]), each bounded by `limit`, all
    /// at once; used at shutdown once the sessions have ended. Returns how many failed.
    pub async fn flush_all(&self, limit: Duration) -> usize {
        let devices: Vec<_> = self
            .targets
            .values()
            .flat_map(|t| t.backends.values())
            .filter_map(|b| b.slot.current())
            .collect();
        let results = futures_util::future::join_all(
            devices.iter().map(|d| flush_before_close(&d.device, limit)),
        )
        .await;
        results.iter().filter(|ok| !**ok).count()
    }
}

fn open_target(
    spec: &TargetSpec,
    state_dir: &Path,
    lock_wait: Duration,
) -> anyhow::Result<TargetRuntime> {
    let port = TargetPort {
        target_name: spec.iqn.clone(),
        relative_port_id: RELATIVE_PORT_ID,
        port_group: spec.tpgt,
    };
    let mut luns = Vec::new();
    let mut backends = HashMap::new();
    for lun in &spec.luns {
        let pr_store = PrStore::new(state_dir, &spec.iqn, lun.lun);
        let (cfg, backend) = match &lun.drbd_resource {
            Some(res) => {
                // Not opened while DRBD has not said this node may write: geometry from a probe.
                let probe = Probe::of(&lun.path, lun.size, lun.read_only)
                    .with_context(|| format!("LUN {}: {}", lun.lun, lun.path.display()))?;
                let cfg = lun_config(lun, &probe).with_context(|| format!("LUN {}", lun.lun))?;
                info!(
                    target = %spec.iqn, lun = lun.lun, path = %lun.path.display(), drbd_resource = %res,
                    blocks = cfg.num_blocks, block_size = cfg.block_size, serial = %cfg.serial, naa = %lun.naa_hex(),
                    "LUN ready; served once DRBD allows"
                );
                let backend = LunBackend::closed(pr_store.clone());
                (cfg, backend)
            }
            None => {
                let device = open_waiting(&lun.path, &lun.open_options(), lock_wait)
                    .with_context(|| format!("LUN {}", lun.lun))?;
                let cfg = lun_config(lun, &device).with_context(|| format!("LUN {}", lun.lun))?;
                info!(
                    target = %spec.iqn, lun = lun.lun, path = %lun.path.display(),
                    blocks = cfg.num_blocks, block_size = cfg.block_size, direct = device.is_direct(), read_cache = device.has_read_cache(),
                    write_cache = cfg.write_cache, unmap = cfg.unmap, serial = %cfg.serial, naa = %lun.naa_hex(),
                    "LUN ready"
                );
                let force_fua = lun.force_fua(&device);
                (cfg, LunBackend::new(device, force_fua, pr_store.clone()))
            }
        };
        let mut unit = LogicalUnit::new(cfg, port.clone());
        if let Some(state) = pr_store
            .load()
            .with_context(|| format!("LUN {}", lun.lun))?
        {
            info!(
                target = %spec.iqn, lun = lun.lun, registrations = state.registrations.len(),
                reserved = state.reservation.is_some(), file = %pr_store.path().display(),
                "persistent reservations restored"
            );
            unit.restore_pr_state(state);
        }
        luns.push((u64::from(lun.lun), unit));
        backends.insert(u64::from(lun.lun), Arc::new(backend));
    }
    Ok(TargetRuntime::new(
        spec.iqn.clone(),
        ScsiTarget::new(luns),
        backends,
    ))
}

/// The SCSI model's view of one LUN: identity from config, geometry and capabilities from
/// the opened device.
fn lun_config(spec: &LunSpec, dev: &impl DeviceProps) -> anyhow::Result<LunConfig> {
    let block_size = spec.block_size_for(dev).map_err(anyhow::Error::msg)?;
    let max_transfer_blocks = MAX_TRANSFER_BYTES / block_size;
    Ok(LunConfig {
        block_size,
        // Reported as one logical block per physical block. The device's own value
        // (dev.physical_block_size()) is only a performance hint, and with more than one
        // block per physical block libiscsi's GetLBAStatus.UnmapSingle fails: it asks for
        // LBA i+1 and expects the first descriptor at i+LBPPB, against SBC-3.
        physical_block_size: block_size,
        num_blocks: dev.size_bytes() / u64::from(block_size),
        vendor: spec.vendor.clone(),
        product: spec.product.clone(),
        revision: spec.revision.clone(),
        serial: spec.serial.clone(),
        naa: spec.naa,
        // When the device caches but the user asked for write-through, the model reports
        // WCE=0 and then issues every write with FUA, which keeps the bit truthful.
        write_cache: spec.write_cache_for(dev),
        unmap: spec.unmap_for(dev),
        read_only: spec.read_only || dev.is_read_only(),
        max_transfer_blocks,
        optimal_transfer_blocks: (1 << 20) / block_size,
        // 1 Mi blocks per UNMAP: large enough for LVM, within what libiscsi's BlockLimits test accepts.
        max_unmap_blocks: 1 << 20,
        max_unmap_descriptors: 256,
        // Below max_transfer_blocks, see the scsi crate's notes on libiscsi's WriteSame16.Unmap.
        max_write_same_blocks: u64::from(max_transfer_blocks.min(65535)),
        rotational: dev.is_rotational(),
    })
}
