//! The ZooKeeper client wire protocol (jute binary encoding), byte for byte.
//!
//! Records, opcodes, error codes and framing. Pure: no I/O, no tokio, no clock.
//! Decoding never panics on any input; every length is checked against the remaining bytes and the
//! `jute.maxbuffer` limit before anything is allocated.

pub mod codec;
pub mod consts;
pub mod records;

pub use codec::{DecodeError, Reader, Writer};
pub use consts::*;
pub use records::*;
