//! Smart plugs at the venue: the Kasa local protocol ([`kasa`]), one actor per plug that serves
//! its requests one at a time and keeps its last known state ([`device`]), what each plug should
//! be doing ([`schedule`]), the loop that drives them there ([`reconcile`]) and finding plugs on
//! the LAN for ops ([`discover`]).

pub mod device;
pub mod discover;
pub mod kasa;
pub mod reconcile;
pub mod schedule;
