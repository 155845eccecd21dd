//! Smart plugs at the venue: the Kasa local protocol ([`kasa`]) and one actor per plug that
//! serves its requests one at a time and keeps its last known state ([`device`]).

pub mod device;
pub mod kasa;
