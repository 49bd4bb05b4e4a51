//! Sans-IO SCSI block device (SPC-4 / SBC-3) target model. It knows nothing of iSCSI:
//! commands come in as CDB bytes plus data, block I/O goes out as requests, responses
//! come back as status, sense and data.
