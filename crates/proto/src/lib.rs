//! The ZooKeeper client wire protocol (jute binary encoding), byte for byte.
//!
//! `codec` has the jute primitives, `records` the record types with their encoders and decoders,
//! `Request::decode`/`Response::encode` (in `request`/`response`) turn bodies into values by opcode,
//! and `frame` splits the byte stream and builds whole frames. Pure: no I/O, no tokio, no clock.
//! Decoding never panics on any input; every length is checked against the remaining bytes and the
//! `jute.maxbuffer` limit before anything is allocated.

pub mod codec;
pub mod consts;
pub mod frame;
pub mod javadate;
pub mod records;
mod request;
mod response;

#[cfg(test)]
mod arb;

pub use codec::{DecodeError, Reader, Writer};
pub use consts::*;
pub use records::*;
pub use request::RequestDecodeError;
