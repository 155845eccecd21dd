//! Settings both services give their websockets: central's change hints to each edge, and the
//! edge's live feed to the venue's screens.

/// Bytes a websocket reads from its connection at a time. Both ends of each socket the services
/// run receive only small messages (a `{"head":N}` hint, a pong, a close); a bigger frame still
/// arrives whole, its buffer grown for it. The protocol library's default is 128 KiB, and it
/// zero-fills that much before every read of the connection, a message's read and the empty one
/// after it both: about 8,000 instructions for each few-byte hint, and 128 KiB of resident memory
/// for every screen on the live feed.
pub const READ_BUFFER_BYTES: usize = 4096;
