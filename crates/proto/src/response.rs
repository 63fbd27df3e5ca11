//! Reply bodies: encoding (server side) and decoding by opcode (client side, tests).
//!
//! The body follows the 16-byte `ReplyHeader`. When the header's err is not 0 there is no body at all
//! (every client skips it); the one exception is multi, whose failures travel inside a body sent with
//! err = 0. The server chooses the [`Response`] and [`MultiResult`] variants; this module only writes them.

use crate::codec::{DecodeError, Reader, Writer};
use crate::consts::OpCode;
use crate::records::*;

impl MultiResult {
    /// The type written in this result's `MultiHeader` (-1 for an error).
    pub fn header_type(&self) -> i32 {
        match self {
            MultiResult::Create { .. } => OpCode::Create.as_i32(),
            MultiResult::Create2 { .. } => OpCode::Create2.as_i32(),
            MultiResult::Delete => OpCode::Delete.as_i32(),
            MultiResult::SetData { .. } => OpCode::SetData.as_i32(),
            MultiResult::Check => OpCode::Check.as_i32(),
            MultiResult::GetChildren { .. } => OpCode::GetChildren.as_i32(),
            MultiResult::GetData { .. } => OpCode::GetData.as_i32(),
            MultiResult::Error(_) => OpCode::Error.as_i32(),
        }
    }

    fn decode(r: &mut Reader<'_>, header: MultiHeader) -> Result<Self, DecodeError> {
        let bad = DecodeError::BadValue {
            what: "multi result type",
            value: header.op,
        };
        let Some(code) = OpCode::from_i32(header.op) else {
            return Err(bad);
        };
        Ok(match code {
            OpCode::Create => MultiResult::Create { path: r.ustring()? },
            OpCode::Create2 => MultiResult::Create2 {
                path: r.ustring()?,
                stat: Stat::decode(r)?,
            },
            OpCode::Delete => MultiResult::Delete,
            OpCode::SetData => MultiResult::SetData {
                stat: Stat::decode(r)?,
            },
            OpCode::Check => MultiResult::Check,
            OpCode::GetChildren => MultiResult::GetChildren {
                children: r.ustring_vec()?,
            },
            OpCode::GetData => MultiResult::GetData {
                data: r.buffer()?,
                stat: Stat::decode(r)?,
            },
            OpCode::Error => MultiResult::Error(r.i32()?),
            _ => return Err(bad),
        })
    }

    fn encode(&self, w: &mut Writer) {
        let err = match self {
            MultiResult::Error(err) => *err,
            _ => 0,
        };
        MultiHeader {
            op: self.header_type(),
            done: false,
            err,
        }
        .encode(w);
        match self {
            MultiResult::Create { path } => w.ustring(path),
            MultiResult::Create2 { path, stat } => {
                w.ustring(path);
                stat.encode(w);
            }
            MultiResult::Delete | MultiResult::Check => {}
            MultiResult::SetData { stat } => stat.encode(w),
            MultiResult::GetChildren { children } => w.ustring_vec(children),
            MultiResult::GetData { data, stat } => {
                w.buffer(data.as_deref());
                stat.encode(w);
            }
            MultiResult::Error(err) => w.i32(*err),
        }
    }
}

impl Response {
    /// Decodes the body of a successful (err = 0) reply to a request with opcode `op`. Unlike request
    /// decoding this is strict: trailing bytes are an error, since ZooKeeper never sends any.
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(body);
        let resp = Self::decode_body(op, &mut r)?;
        r.finish()?;
        Ok(resp)
    }

    fn decode_body(op: OpCode, r: &mut Reader<'_>) -> Result<Response, DecodeError> {
        Ok(match op {
            OpCode::Delete
            | OpCode::Ping
            | OpCode::Check
            | OpCode::CheckWatches
            | OpCode::RemoveWatches
            | OpCode::DeleteContainer
            | OpCode::Auth
            | OpCode::SetWatches
            | OpCode::SetWatches2
            | OpCode::CloseSession => Response::Empty,
            OpCode::Create => Response::Create { path: r.ustring()? },
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => Response::Create2 {
                path: r.ustring()?,
                stat: Stat::decode(r)?,
            },
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl => Response::Stat(Stat::decode(r)?),
            OpCode::GetData | OpCode::Reconfig => Response::GetData {
                data: r.buffer()?,
                stat: Stat::decode(r)?,
            },
            OpCode::GetAcl => Response::GetAcl {
                acl: read_acls(r)?,
                stat: Stat::decode(r)?,
            },
            OpCode::GetChildren => Response::GetChildren {
                children: r.ustring_vec()?,
            },
            OpCode::GetChildren2 => Response::GetChildren2 {
                children: r.ustring_vec()?,
                stat: Stat::decode(r)?,
            },
            OpCode::Sync => Response::Sync { path: r.ustring()? },
            OpCode::Multi | OpCode::MultiRead => {
                let mut results = Vec::new();
                loop {
                    let h = MultiHeader::decode(r)?;
                    if h.done {
                        break Response::Multi(results);
                    }
                    results.push(MultiResult::decode(r, h)?);
                }
            }
            OpCode::AddWatch => Response::ErrorResponse(r.i32()?),
            OpCode::Sasl => Response::Sasl { token: r.buffer()? },
            OpCode::GetEphemerals => Response::GetEphemerals {
                paths: r.ustring_vec()?,
            },
            OpCode::GetAllChildrenNumber => Response::AllChildrenNumber(r.i32()?),
            OpCode::WhoAmI => Response::WhoAmI(
                r.vec(ClientInfo::MIN_BYTES, ClientInfo::decode)?
                    .unwrap_or_default(),
            ),
            // Notifications and handshakes have their own records (WatcherEvent, ConnectResponse).
            OpCode::Notification | OpCode::CreateSession | OpCode::Error => {
                return Err(DecodeError::BadValue {
                    what: "reply opcode",
                    value: op.as_i32(),
                })
            }
        })
    }

    /// Encodes the body (without the `ReplyHeader`).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Response::Empty => {}
            Response::Create { path } | Response::Sync { path } => w.ustring(path),
            Response::Create2 { path, stat } => {
                w.ustring(path);
                stat.encode(w);
            }
            Response::Stat(stat) => stat.encode(w),
            Response::GetData { data, stat } => {
                w.buffer(data.as_deref());
                stat.encode(w);
            }
            Response::GetAcl { acl, stat } => {
                write_acls(w, acl);
                stat.encode(w);
            }
            Response::GetChildren { children } => w.ustring_vec(children),
            Response::GetChildren2 { children, stat } => {
                w.ustring_vec(children);
                stat.encode(w);
            }
            Response::Multi(results) => {
                for res in results {
                    res.encode(w);
                }
                MultiHeader::END.encode(w);
            }
            Response::ErrorResponse(err) => w.i32(*err),
            Response::AllChildrenNumber(total) => w.i32(*total),
            Response::Sasl { token } => w.buffer(token.as_deref()),
            Response::GetEphemerals { paths } => w.ustring_vec(paths),
            Response::WhoAmI(infos) => w.vec(Some(infos), |w, info| info.encode(w)),
        }
    }

    /// The encoded body as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arb;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn response_round_trips((op, resp) in arb::response()) {
            let bytes = resp.to_bytes();
            let back = Response::decode(op, &bytes).expect("decodes");
            prop_assert_eq!(&back, &resp);
            prop_assert_eq!(back.to_bytes(), bytes);
        }

        #[test]
        fn multi_read_response_round_trips(results in vec(arb::multi_result(), 0..4)) {
            let resp = Response::Multi(results);
            let bytes = resp.to_bytes();
            prop_assert_eq!(Response::decode(OpCode::MultiRead, &bytes), Ok(resp));
        }

        #[test]
        fn response_decode_never_panics(op in arb::any_opcode(), body in vec(any::<u8>(), 0..128)) {
            if let Some(op) = OpCode::from_i32(op) {
                let _ = Response::decode(op, &body);
            }
        }
    }

    #[test]
    fn failed_multi_body_matches_zookeeper() {
        // create /a ok, create /a fails with NodeExists, delete /b not run: ZooKeeper turns every
        // result into an error result, 0 before the failure, -2 after it.
        let resp = Response::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(-110),
            MultiResult::Error(-2),
        ]);
        let expected = concat!(
            "ffffffff", "00", "00000000", "00000000", // {-1,false,0} ErrorResponse{0}
            "ffffffff", "00", "ffffff92", "ffffff92", // {-1,false,-110} ErrorResponse{-110}
            "ffffffff", "00", "fffffffe", "fffffffe", // {-1,false,-2} ErrorResponse{-2}
            "ffffffff", "01", "ffffffff", // terminator {-1,true,-1}
        );
        assert_eq!(hex::encode(resp.to_bytes()), expected);
    }

    #[test]
    fn add_watch_reply_has_a_four_byte_body() {
        assert_eq!(Response::ErrorResponse(0).to_bytes(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn trailing_bytes_in_a_response_are_an_error() {
        assert_eq!(
            Response::decode(OpCode::Delete, &[0]),
            Err(DecodeError::Trailing(1))
        );
    }
}
