//! The venue's smart plugs: what each should be doing, and talking to them.

pub mod schedule;
