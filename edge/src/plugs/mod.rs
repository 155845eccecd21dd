//! Smart plugs at the venue: the Kasa local protocol ([`kasa`]), one actor per plug that serves
//! its requests one at a time and keeps its last known state ([`device`]), what each plug should
//! be doing ([`schedule`]).

pub mod device;
pub mod kasa;
pub mod schedule;
