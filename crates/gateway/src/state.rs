//! Persistent-reservation state on disk: one file per LUN under the configured state
//! directory, written atomically (temp file, fsync, rename, fsync of the directory) before
//! the PERSISTENT RESERVE OUT that changed it completes, and loaded at start. On a cluster
//! the directory lives on replicated storage, so a takeover finds the same registrations.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use scsi::PrState;

/// Where one LUN's reservation state is kept.
#[derive(Debug, Clone)]
pub struct PrStore {
    path: PathBuf,
}

/// Why stored state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt persistent-reservation state ({reason}); move it away to start without reservations")]
    Corrupt { path: PathBuf, reason: String },
}

impl PrStore {
    /// The store of LUN `lun` of target `iqn` under `state_dir`.
    pub fn new(state_dir: &Path, iqn: &str, lun: u16) -> Self {
        // IQNs contain ':' and '.', both fine in file names; '/' cannot occur in a valid name
        // but is replaced anyway so the path can never leave the directory.
        let name: String = iqn
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        PrStore {
            path: state_dir.join(format!("{name}.lun{lun}.pr")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, or `None` when nothing was stored yet.
    pub fn load(&self) -> Result<Option<PrState>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        PrState::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Replaces the stored state atomically and durably.
    pub fn save(&self, state: &PrState) -> Result<(), StateError> {
        let io_err = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = self.path.with_extension("pr.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err)?;
            f.write_all(&state.to_bytes()).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use scsi::{PrType, Registration, Reservation};

    fn sample() -> PrState {
        PrState {
            generation: 7,
            aptpl: true,
            registrations: vec![Registration {
                key: 0x1234_abcd,
                initiator_port: "iqn.2026-11.test:a,i,0x800000000001".into(),
                initiator_name: "iqn.2026-11.test:a".into(),
                relative_port_id: 1,
                all_tg_pt: false,
            }],
            reservation: Some(Reservation {
                pr_type: PrType::WriteExclusive,
                holder: Some(("iqn.2026-11.test:a,i,0x800000000001".into(), 1)),
            }),
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let store = PrStore::new(&d.path().join("state"), "iqn.2026-11.test:t", 3);
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        let names: Vec<_> = fs::read_dir(d.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["iqn.2026-11.test:t.lun3.pr".to_string()]);
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let store = PrStore::new(d.path(), "iqn.2026-11.test:t", 0);
        fs::write(store.path(), b"not a reservation state").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("lun0.pr") && e.contains("corrupt"), "{e}");
    }
}
