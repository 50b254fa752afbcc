//! The PostgreSQL wire codec as evshift uses it: finding complete frames, the startup packet,
//! and the few messages evshift writes itself. Plain data and pure functions; no I/O here.
//!
//! Decoding and encoding of typed messages is pgwire's (`pgwire::messages`); this module adds the
//! cheap framing a relay needs so that forwarded bytes are never decoded or copied.

pub mod frame;
pub mod frontend;
pub mod messages;
pub mod startup;

pub use frame::{Frame, FrameError};
