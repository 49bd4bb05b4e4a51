//! The intake gate: how a connection holds new SCSI commands while the gateway's command
//! data budget is used up, without ceasing to read its input.
//!
//! While the gate is closed ([`Connection::set_intake_open`] with `false`):
//! * SCSI Command PDUs are still parsed, validated and pass the CmdSN gate (so NOP-Outs,
//!   task management and logouts ordered after them are not blocked), but a command that
//!   is ready for delivery waits in `held` instead of becoming an [`Event::ScsiCommand`];
//! * no R2T is sent, so no new write data is solicited (Data-Out answering R2Ts already
//!   sent, and unsolicited data, is still taken);
//! * MaxCmdSN does not advance when commands complete. A well-behaved initiator therefore
//!   stops at the current window; one that ignores MaxCmdSN has its commands dropped as out
//!   of window, so what is held is bounded by the window plus the immediate command limit.
//!
//! Task management still reaches held commands: they were never delivered, so an abort
//! drops them here (`drop_task` also takes them out of `held`).
//!
//! Reopening delivers the held commands in order, sends the R2Ts that were held back and,
//! if MaxCmdSN could have advanced meanwhile and no PDU carried it since, announces the
//! new window with an unsolicited NOP-In (ITT and TTT 0xffffffff, no reply wanted,
//! StatSN not advanced; RFC 7143 §11.19).

use bytes::Bytes;
use tracing::debug;

use super::{Connection, Phase, RESERVED_TAG};
use crate::pdu::{NopIn, Pdu};

impl Connection {
    /// Opens or closes the intake gate (see the module docs). Cheap to call with an
    /// unchanged value, e.g. once per loop iteration of the gateway.
    pub fn set_intake_open(&mut self, open: bool) {
        self.check_buffered();
        if open == self.intake_open {
            return;
        }
        self.intake_open = open;
        if open {
            debug!(held = self.held.len(), "intake reopened");
            self.deliver_held();
            self.resume_r2ts();
            self.announce_window();
        } else {
            debug!("intake closed");
        }
    }

    /// True while the gate is closed and something waits for it to open: held commands,
    /// R2Ts not sent, or a MaxCmdSN not announced. The gateway then needs a wake-up when
    /// its budget frees up.
    pub fn intake_waiting(&self) -> bool {
        if self.intake_open {
            return false;
        }
        let max_out = self.params.max_outstanding_r2t;
        !self.held.is_empty()
            || self.window_held
            || self
                .tasks
                .values()
                .any(|t| t.write_state.as_ref().is_some_and(|w| w.wants_r2t(max_out)))
    }

    /// Delivers what waited at the closed gate, in the order it became ready.
    fn deliver_held(&mut self) {
        while let Some(itt) = self.held.pop_front() {
            self.try_deliver(itt);
        }
    }

    /// Sends the R2Ts held back while the gate was closed, oldest command first.
    fn resume_r2ts(&mut self) {
        let max_out = self.params.max_outstanding_r2t;
        let exp = self.exp_cmd_sn;
        let mut waiting: Vec<(u32, u32)> = self
            .tasks
            .values()
            .filter(|t| t.write_state.as_ref().is_some_and(|w| w.wants_r2t(max_out)))
            .map(|t| (t.cmd_sn.wrapping_sub(exp), t.itt))
            .collect();
        waiting.sort_unstable();
        for (_, itt) in waiting {
            self.issue_r2ts(itt);
        }
    }

    /// Tells the initiator about a window that could not open while the gate was closed,
    /// unless a PDU sent since already carried the new MaxCmdSN.
    fn announce_window(&mut self) {
        if !self.window_held || self.is_closed() || !matches!(self.phase, Phase::FullFeature) {
            return;
        }
        let sn = self.sn(false);
        debug!(
            max_cmd_sn = sn.max_cmd_sn,
            "announcing the reopened CmdSN window"
        );
        self.send(
            Pdu::NopIn(NopIn {
                lun: 0,
                itt: RESERVED_TAG,
                ttt: RESERVED_TAG,
                sn,
                data: Bytes::new(),
            }),
            false,
        );
    }
}
