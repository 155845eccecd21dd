//! The venue's audit trail of sensitive actions (refunds, balance adjustments, dead letters): who, from
//! where, what and when, written in the same transaction as the action itself.

use crate::replica::ts;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Principal;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

/// Appends one audit entry; `target` names what was acted on (and, for a correction, why).
pub fn record(
    c: &Connection,
    auth: &Auth,
    action: &str,
    target: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let name = actor_name(auth);
    c.prepare_cached(
        "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, ip, action, target)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        Uuid::now_v7(),
        ts(at),
        auth.principal.kind_label(),
        auth.principal.id(),
        name,
        auth.client.to_string(),
        action,
        target
    ])?;
    tracing::info!(action, target, actor = %name, "audited");
    Ok(())
}

/// Who acted, as the audit trail names them: the staff member's username, or the device kind.
pub fn actor_name(auth: &Auth) -> String {
    match &auth.principal {
        Principal::Staff { username, .. } => username.clone(),
        Principal::Device { kind, .. } => kind.as_str().to_string(),
    }
}

/// Who made a venue record: `device:<id>` or `user:<id>`.
pub fn actor(auth: &Auth) -> String {
    format!("{}:{}", auth.principal.kind_label(), auth.principal.id())
}
