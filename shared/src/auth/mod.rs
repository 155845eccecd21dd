//! Authentication primitives: staff password hashes, machine API keys and staff JWTs.
pub mod api_key;
pub mod extract;
pub mod jwt;
pub mod login;
pub mod password;
pub mod principal;
pub mod throttle;
