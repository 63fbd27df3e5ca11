//! The replicated state machine of oxkeeper and the member-local tables beside it.
//!
//! `DataTree`, the session table, the zxid counter and ACL checks are replicated: `apply` is a pure function
//! of (state, command). The watch table is member-local. Time and inputs come in as arguments: no I/O, no
//! clock, no tokio here.
