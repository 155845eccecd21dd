//! Shared by `aero-central` and `aero-edge`: wire types, authentication and authorization,
//! and the HTTP request pipeline, written once so both services enforce the same rules.

pub mod auth;
pub mod client_ip;
pub mod clock;
pub mod cron_expr;
pub mod data_lock;
pub mod etag;
pub mod files;
pub mod handler_state;
pub mod idempotency;
pub mod json;
pub mod ledger;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod pipeline;
pub mod problem;
pub mod query_plan;
pub mod ratelimit;
pub mod server;
pub mod settings;
pub mod sqlite_backup;
pub mod systemd;
pub mod table;
pub mod timestamp;
pub mod validate;
pub mod websocket;
pub mod wire;

pub use problem::{ApiError, FieldError, Problem};
