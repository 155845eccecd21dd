//! The audit log as HQ reads it: its entries, and the filter a reader narrows them with, turned
//! into the same SQL condition for every backend.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub site_id: Option<Uuid>,
}

/// Which entries of the audit log to list: those matching every part given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditFilter {
    /// Entries about this venue.
    pub site_id: Option<Uuid>,
    /// Entries of writes by this actor.
    pub actor: Option<AuditActor>,
    /// Entries of this action, in lower case like every action's name (`site.create`).
    pub action: Option<String>,
}

/// The actor an audit filter looks for.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditActor {
    /// The user's or device's id.
    Id(Uuid),
    /// The name the entry recorded (a username, a device's name), ignoring case as usernames do.
    Name(String),
}

/// A value the filter's SQL compares a column with, in placeholder order.
#[derive(Debug, PartialEq)]
pub(crate) enum AuditValue<'a> {
    Id(Uuid),
    Text(&'a str),
}

/// How a backend spells what the filter's SQL needs.
pub(crate) struct Dialect {
    /// The text of the `n`th placeholder (`?3`, `@P3`).
    pub(crate) placeholder: fn(usize) -> String,
    /// The collation that compares names ignoring case.
    pub(crate) ignore_case: &'static str,
}

impl AuditFilter {
    /// One venue's entries.
    pub fn site(site_id: Uuid) -> Self {
        Self {
            site_id: Some(site_id),
            ..Self::default()
        }
    }

    /// A filter from what a reader typed: blank parts are ignored, an actor that is a UUID is
    /// an id and anything else a name, an action is compared in lower case.
    pub fn new(site_id: Option<Uuid>, actor: Option<&str>, action: Option<&str>) -> Self {
        fn given(text: Option<&str>) -> Option<&str> {
            text.map(str::trim).filter(|t| !t.is_empty())
        }
        Self {
            site_id,
            actor: given(actor).map(|actor| match Uuid::parse_str(actor) {
                Ok(id) => AuditActor::Id(id),
                Err(_) => AuditActor::Name(actor.to_string()),
            }),
            action: given(action).map(str::to_lowercase),
        }
    }

    /// The `WHERE` clause choosing the filter's entries (empty when it chooses all), with its
    /// placeholders numbered from `first`, and their values in that order. Each combination of
    /// parts is its own statement text, so each gets its own plan.
    pub(crate) fn sql(&self, first: usize, dialect: &Dialect) -> (String, Vec<AuditValue<'_>>) {
        let mut parts = Vec::new();
        if let Some(site_id) = self.site_id {
            parts.push(("site_id", "", AuditValue::Id(site_id)));
        }
        match &self.actor {
            Some(AuditActor::Id(id)) => parts.push(("actor_id", "", AuditValue::Id(*id))),
            Some(AuditActor::Name(name)) => {
                parts.push(("actor_name", dialect.ignore_case, AuditValue::Text(name)))
            }
            None => {}
        }
        if let Some(action) = &self.action {
            parts.push(("action", "", AuditValue::Text(action)));
        }
        let conditions: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, (column, collation, _))| {
                format!("{column} = {}{collation}", (dialect.placeholder)(first + i))
            })
            .collect();
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        (
            clause,
            parts.into_iter().map(|(_, _, value)| value).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQLITE: Dialect = Dialect {
        placeholder: |n| format!("?{n}"),
        ignore_case: " COLLATE NOCASE",
    };

    #[test]
    fn only_the_parts_given_become_conditions_numbered_in_order() {
        let site = Uuid::now_v7();
        let all = AuditFilter::new(Some(site), Some(" Ada "), Some("Site.Create"));
        let (clause, values) = all.sql(2, &SQLITE);
        assert_eq!(
            clause,
            "WHERE site_id = ?2 AND actor_name = ?3 COLLATE NOCASE AND action = ?4"
        );
        assert_eq!(
            values,
            [
                AuditValue::Id(site),
                AuditValue::Text("Ada"),
                AuditValue::Text("site.create")
            ]
        );
        let id = Uuid::now_v7();
        let by_id = AuditFilter::new(None, Some(&id.to_string()), Some("  "));
        assert_eq!(
            by_id.sql(1, &SQLITE),
            ("WHERE actor_id = ?1".into(), vec![AuditValue::Id(id)])
        );
        assert_eq!(
            AuditFilter::default().sql(2, &SQLITE),
            (String::new(), vec![])
        );
    }
}
