//! Smart plugs at the venue: the Kasa local protocol ([`kasa`]), one actor per plug that serves
//! its requests one at a time and keeps its last known state ([`device`]), what each plug should
//! be doing ([`schedule`]) and the loop that drives them there ([`reconcile`]).

pub mod device;
pub mod kasa;
pub mod reconcile;
pub mod schedule;
