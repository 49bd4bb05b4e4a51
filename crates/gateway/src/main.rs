//! `iscsi-gateway`: the binary that owns sockets, files and the io_uring ring.
fn main() {}
