//! The venue's audit trail of sensitive actions (refunds, balance adjustments, dead letters): who, from
//! where, what and when, written in the same transaction as the action itself.

use crate::replica::ts;
use aero_shared::auth::extract::Auth;
use aero_shared::auth::principal::Principal;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

/// Who an audit entry names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `user` or `device` for a request at the venue; `hq` for a request HQ made at central.
    pub kind: &'static str,
    pub id: Option<Uuid>,
    pub name: String,
    /// The client address, for a request at the venue.
    pub ip: Option<String>,
}

impl Actor {
    /// The staff member or device behind a request at the venue.
    pub fn of(auth: &Auth) -> Self {
        Self {
            kind: auth.principal.kind_label(),
            id: Some(auth.principal.id()),
            name: actor_name(auth),
            ip: Some(auth.client.to_string()),
        }
    }

    /// A member of HQ staff (by username) whose request reached the venue through central.
    pub fn hq(username: &str) -> Self {
        Self {
            kind: "hq",
            id: None,
            name: username.to_string(),
            ip: None,
        }
    }
}

/// Appends one audit entry; `target` names what was acted on (and, for a correction, why).
pub fn record(
    c: &Connection,
    auth: &Auth,
    action: &str,
    target: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    record_as(c, &Actor::of(auth), action, target, at)
}

/// Appends one audit entry naming `actor`.
pub fn record_as(
    c: &Connection,
    actor: &Actor,
    action: &str,
    target: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    c.prepare_cached(
        "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, ip, action, target)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        Uuid::now_v7(),
        ts(at),
        actor.kind,
        actor.id,
        actor.name,
        actor.ip,
        action,
        target
    ])?;
    tracing::info!(action, target, actor = %actor.name, "audited");
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
