//! Smart plugs at the venue: the Kasa local protocol ([`kasa`]).

pub mod kasa;
