//! Applying central's change feed to the replica. Runs on the writer connection, inside the
//! writer's transaction, together with the cursor update, so a page is applied whole or not at all.

use super::{ts, venue, waiver_texts};
use aero_shared::wire::{
    ChangeAnchor, ChangeOp, CustomerRecord, DeviceRecord, Entity, ProductRecord, SiteRecord,
    UserRecord, WaiverRecord,
};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A pull page as the edge reads it: each change stays JSON text until it is decoded on its own,
/// so one change this version cannot read never fails the page (or stalls the feed behind it),
/// and a change the replica already holds is never built into a JSON tree at all.
#[derive(Clone, Debug, Deserialize)]
pub struct PulledPage {
    pub changes: Vec<PulledChange>,
    pub next_cursor: i64,
    pub more: bool,
    pub store_id: Uuid,
    pub head: i64,
    pub acked_seq: i64,
    pub anchor: Option<ChangeAnchor>,
}

impl PulledPage {
    /// The entities this version knows that the page's changes are about.
    pub fn entities(&self) -> std::collections::HashSet<Entity> {
        self.changes
            .iter()
            .filter_map(|change| change.head.map(|head| head.entity))
            .collect()
    }
}

/// One change of a pulled page: its JSON text, and what it is about, read as the page arrives
/// (before the writer takes it).
#[derive(Clone, Debug)]
pub struct PulledChange {
    text: Box<RawValue>,
    /// `None` when the change does not name an entity this version knows, or cannot be read.
    head: Option<ChangeHead>,
}

impl PulledChange {
    pub fn new(text: Box<RawValue>) -> Self {
        let head = serde_json::from_str::<ChangeHeadText>(text.get())
            .ok()
            .and_then(|head| {
                Some(ChangeHead {
                    seq: head.seq,
                    entity: Entity::parse(&head.entity)?,
                    entity_id: head.entity_id,
                    upsert: head.op == ChangeOp::Upsert.as_str(),
                    changed_at: head.changed_at,
                })
            });
        Self { text, head }
    }

    pub fn text(&self) -> &str {
        self.text.get()
    }
}

impl<'de> Deserialize<'de> for PulledChange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::new)
    }
}

/// The fields of a change that say what it is about, read from its text without its record.
#[derive(Deserialize)]
struct ChangeHeadText<'a> {
    seq: i64,
    #[serde(borrow)]
    entity: std::borrow::Cow<'a, str>,
    entity_id: Uuid,
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    changed_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug)]
struct ChangeHead {
    seq: i64,
    entity: Entity,
    entity_id: Uuid,
    upsert: bool,
    changed_at: DateTime<Utc>,
}

/// One change of the feed with its entity as text, so entities a newer central adds are kept.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RawChange {
    pub seq: i64,
    pub entity: String,
    pub entity_id: Uuid,
    pub op: String,
    #[serde(default)]
    pub site_id: Option<Uuid>,
    #[serde(default)]
    pub data: serde_json::Value,
    pub changed_at: DateTime<Utc>,
}

impl RawChange {
    fn anchor(&self) -> ChangeAnchor {
        ChangeAnchor {
            seq: self.seq,
            entity_id: self.entity_id,
            changed_at: self.changed_at,
        }
    }

    /// Customers and waivers are venue data (chain-wide); everything else is HQ's.
    fn is_hq_data(&self) -> bool {
        !matches!(
            Entity::parse(&self.entity),
            Some(Entity::Customer | Entity::Waiver)
        )
    }
}

/// What applying a page did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageOutcome {
    pub applied: usize,
    /// Changes held back because the row has pending local ops.
    pub held: usize,
    /// Changes that could not be decoded (kept in `skipped_changes`).
    pub skipped: usize,
    /// A resync finished with this page; HQ rows it did not see again were removed.
    pub resync_finished: bool,
}

/// Applies one pulled page and stores its cursor and anchor.
pub fn apply_page(
    conn: &Connection,
    page: &PulledPage,
    now: DateTime<Utc>,
) -> anyhow::Result<PageOutcome> {
    let resyncing: bool = conn
        .prepare_cached("SELECT resyncing FROM sync_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    let mut outcome = PageOutcome::default();
    let mut last_anchor = None;
    for pulled in &page.changes {
        let text = pulled.text();
        if let Some(anchor) = held_venue_record(conn, pulled.head)? {
            last_anchor = Some(anchor);
            outcome.applied += 1;
            continue;
        }
        let change: RawChange = match serde_json::from_str(text) {
            Ok(change) => change,
            Err(err) => {
                skip(conn, text, &err.to_string(), now)?;
                outcome.skipped += 1;
                last_anchor = None;
                continue;
            }
        };
        last_anchor = Some(change.anchor());
        if resyncing && change.is_hq_data() {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO resync_seen (entity, entity_id) VALUES (?1, ?2)",
            )?
            .execute(params![change.entity, change.entity_id])?;
        }
        // A row with un-acknowledged local ops is ours to send first: central's change waits
        // until those ops are acknowledged or dead-lettered (see `release_held`).
        if has_pending_ops(conn, &change.entity, change.entity_id)? && !is_echo(conn, &change)? {
            conn.prepare_cached(
                "INSERT INTO held_changes (entity, entity_id, seq, change) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (entity, entity_id) DO UPDATE SET seq = excluded.seq, change = excluded.change
                 WHERE excluded.seq > held_changes.seq",
            )?
            .execute(params![change.entity, change.entity_id, change.seq, text])?;
            outcome.held += 1;
            continue;
        }
        match apply_change(conn, &change, now) {
            Ok(()) => outcome.applied += 1,
            Err(err) => {
                skip(conn, text, &format!("{err:#}"), now)?;
                outcome.skipped += 1;
            }
        }
    }
    conn.prepare_cached(
        "UPDATE sync_state SET cursor = MAX(cursor, ?1),
            cursor_anchor = CASE WHEN ?2 THEN ?3 ELSE cursor_anchor END,
            last_pull_at = ?4, online = 1, pull_error = NULL, last_error = NULL WHERE id = 1",
    )?
    .execute(params![
        page.next_cursor,
        !page.changes.is_empty(),
        last_anchor.map(|a| serde_json::to_string(&a)).transpose()?,
        ts(now)
    ])?;
    if resyncing && !page.more {
        finish_resync(conn)?;
        outcome.resync_finished = true;
    }
    Ok(outcome)
}

/// The anchor of a change to a venue record the replica already holds, `None` for any other
/// change. Venue records never change once written, so there is nothing to apply; most are this
/// edge's own, sent back by central once it took the push, and skipping them here spares the
/// writer decoding, re-encoding and re-inserting every order and check-in it just sold.
fn held_venue_record(
    conn: &Connection,
    head: Option<ChangeHead>,
) -> anyhow::Result<Option<ChangeAnchor>> {
    let Some(head) = head else {
        return Ok(None);
    };
    if !head.upsert || !holds_venue_record(conn, head.entity, head.entity_id)? {
        return Ok(None);
    }
    Ok(Some(ChangeAnchor {
        seq: head.seq,
        entity_id: head.entity_id,
        changed_at: head.changed_at,
    }))
}

/// Whether `entity` is a venue record (immutable once written) and the replica holds it.
fn holds_venue_record(conn: &Connection, entity: Entity, id: Uuid) -> anyhow::Result<bool> {
    match table(entity) {
        Some(table) if is_venue_record(entity) => venue::holds(conn, table, id),
        _ => Ok(false),
    }
}

/// Whether a change is the echo of what the replica already holds (central took the pending op
/// and sent its row back before the push's answer arrived): nothing to hold back then.
fn is_echo(conn: &Connection, change: &RawChange) -> anyhow::Result<bool> {
    let (table, text) = match Entity::parse(&change.entity) {
        Some(Entity::Customer) => match CustomerRecord::deserialize(&change.data) {
            Ok(record) => ("customers", serde_json::to_string(&record)?),
            Err(_) => return Ok(false),
        },
        Some(Entity::Waiver) => match WaiverRecord::deserialize(&change.data) {
            Ok(record) => ("waivers", serde_json::to_string(&record)?),
            Err(_) => return Ok(false),
        },
        // Venue records never change once written: holding the id is holding the row.
        Some(entity) if is_venue_record(entity) => {
            return holds_venue_record(conn, entity, change.entity_id);
        }
        _ => return Ok(false),
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1 AND data = ?2)"
        ))?
        .query_row(params![change.entity_id, text], |r| r.get(0))?)
}

fn has_pending_ops(conn: &Connection, entity: &str, id: Uuid) -> anyhow::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE entity = ?1 AND entity_id = ?2)",
        )?
        .query_row(params![entity, id], |r| r.get(0))?)
}

fn skip(conn: &Connection, text: &str, reason: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    // Whatever of the change can be read, for the log line and the row's columns.
    let change = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let field = |name: &str| {
        change
            .get(name)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    tracing::warn!(change = %field("seq"), entity = %field("entity"), reason, "kept a change the replica cannot apply");
    conn.prepare_cached(
        "INSERT OR REPLACE INTO skipped_changes (seq, entity, entity_id, reason, change, skipped_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        change.get("seq").and_then(serde_json::Value::as_i64),
        field("entity"),
        field("entity_id"),
        reason,
        text,
        ts(now)
    ])?;
    Ok(())
}

/// Applies the held changes of rows that no longer have pending local ops. Returns how many.
pub fn release_held(conn: &Connection, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let ready: Vec<(String, Uuid, String)> = conn
        .prepare_cached(
            "SELECT entity, entity_id, change FROM held_changes h
              WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.entity = h.entity AND o.entity_id = h.entity_id)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (entity, id, text) in &ready {
        let change: RawChange = serde_json::from_str(text)?;
        if let Err(err) = apply_change(conn, &change, now) {
            tracing::warn!(seq = change.seq, error = %format!("{err:#}"), "a held change could not be applied");
        }
        conn.prepare_cached("DELETE FROM held_changes WHERE entity = ?1 AND entity_id = ?2")?
            .execute(params![entity, id])?;
    }
    Ok(ready.len())
}

/// HQ tables swept at the end of a resync, with the entity their rows belong to.
const HQ_TABLES: &[(&str, Entity)] = &[
    ("sites", Entity::Site),
    ("devices", Entity::Device),
    ("users", Entity::User),
    ("products", Entity::Product),
    ("games", Entity::Game),
    ("waiver_texts", Entity::WaiverText),
];

/// Ends a resync: HQ rows central no longer has (it was restored to a point before them) are
/// removed, so a key or a user that only existed in central's lost history stops working here.
fn finish_resync(conn: &Connection) -> anyhow::Result<()> {
    let mut removed = 0;
    for (table, entity) in HQ_TABLES {
        removed += conn.execute(
            &format!(
                "DELETE FROM {table} WHERE NOT EXISTS
                    (SELECT 1 FROM resync_seen s WHERE s.entity = ?1 AND s.entity_id = {table}.id)"
            ),
            [entity.as_str()],
        )?;
    }
    removed += conn.execute(
        "DELETE FROM other_rows WHERE entity NOT IN ('customer', 'waiver') AND NOT EXISTS
            (SELECT 1 FROM resync_seen s WHERE s.entity = other_rows.entity AND s.entity_id = other_rows.entity_id)",
        [],
    )?;
    conn.execute("DELETE FROM resync_seen", [])?;
    conn.execute("UPDATE sync_state SET resyncing = 0 WHERE id = 1", [])?;
    tracing::info!(removed, "replica resynchronised with central");
    Ok(())
}

fn table(entity: Entity) -> Option<&'static str> {
    match entity {
        Entity::Site => Some("sites"),
        Entity::Device => Some("devices"),
        Entity::User => Some("users"),
        Entity::Product => Some("products"),
        Entity::Customer => Some("customers"),
        Entity::Waiver => Some("waivers"),
        Entity::Game => Some("games"),
        Entity::Order => Some("orders"),
        Entity::Refund => Some("refunds"),
        Entity::LedgerEntry => Some("ledger"),
        Entity::Checkin => Some("checkins"),
        Entity::Score => Some("scores"),
        Entity::WaiverText => Some("waiver_texts"),
        Entity::Plug
        | Entity::PlugSchedule
        | Entity::PlugOverride
        | Entity::DeadLetter
        | Entity::PlugStatus
        | Entity::DeadLetterRequest => None,
    }
}

/// Records a venue writes once and never edits.
fn is_venue_record(entity: Entity) -> bool {
    matches!(
        entity,
        Entity::Order | Entity::Refund | Entity::LedgerEntry | Entity::Checkin | Entity::Score
    )
}

fn apply_change(conn: &Connection, change: &RawChange, now: DateTime<Utc>) -> anyhow::Result<()> {
    let id = change.entity_id;
    let entity = Entity::parse(&change.entity);
    match change.op.as_str() {
        "delete" => {
            match entity.and_then(table) {
                Some(table) => conn.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?,
                None => conn.execute(
                    "DELETE FROM other_rows WHERE entity = ?1 AND entity_id = ?2",
                    params![change.entity, id],
                )?,
            };
            return Ok(());
        }
        "upsert" => {}
        other => anyhow::bail!("unknown change op {other:?}"),
    }
    let Some(entity) = entity else {
        // An entity a newer central replicates and this version does not know: kept as is, so
        // an upgraded edge finds it without pulling everything again.
        return keep_other(conn, &change.entity, id, &change.data);
    };
    match entity {
        Entity::Site => {
            let site = SiteRecord::deserialize(&change.data)?;
            conn.execute(
                "INSERT INTO sites (id, allowed_networks, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET allowed_networks = excluded.allowed_networks, data = excluded.data",
                params![id, serde_json::to_string(&site.allowed_networks)?, change.data.to_string()],
            )?;
        }
        Entity::Device => {
            let device = DeviceRecord::deserialize(&change.data)?;
            conn.execute(
                "INSERT INTO devices (id, site_id, key_hash, revoked_at, data) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET site_id = excluded.site_id, key_hash = excluded.key_hash,
                    revoked_at = excluded.revoked_at, data = excluded.data",
                params![id, device.site_id, device.key_hash, device.revoked_at.map(ts), change.data.to_string()],
            )?;
        }
        Entity::User => {
            let user = UserRecord::deserialize(&change.data)?;
            conn.execute(
                "INSERT INTO users (id, username, disabled_at, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET username = excluded.username,
                    disabled_at = excluded.disabled_at, data = excluded.data",
                params![
                    id,
                    user.username,
                    user.disabled_at.map(ts),
                    change.data.to_string()
                ],
            )?;
        }
        Entity::Product => {
            let product = ProductRecord::deserialize(&change.data)?;
            conn.execute(
                "INSERT INTO products (id, sku, active, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, active = excluded.active, data = excluded.data",
                params![id, product.sku, product.active, change.data.to_string()],
            )?;
        }
        Entity::Customer => {
            let customer = CustomerRecord::deserialize(&change.data)?;
            upsert_customer(conn, &customer)?;
        }
        Entity::Waiver => {
            let waiver = WaiverRecord::deserialize(&change.data)?;
            upsert_waiver(conn, &waiver)?;
        }
        Entity::Game => {
            venue::upsert_game(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::WaiverText => {
            waiver_texts::upsert(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::Order => {
            venue::insert_order(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::Refund => {
            venue::insert_refund(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::LedgerEntry => {
            venue::insert_ledger_entry(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::Checkin => {
            venue::insert_checkin(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::Score => {
            venue::insert_score(conn, &Deserialize::deserialize(&change.data)?)?;
        }
        Entity::DeadLetterRequest => {
            // Acted on, not kept: the decision itself goes back to central through the outbox.
            crate::dead_letters::carry_out(conn, &Deserialize::deserialize(&change.data)?, now)?;
        }
        Entity::Plug
        | Entity::PlugSchedule
        | Entity::PlugOverride
        | Entity::DeadLetter
        | Entity::PlugStatus => {
            keep_other(conn, entity.as_str(), id, &change.data)?;
        }
    }
    Ok(())
}

fn keep_other(
    conn: &Connection,
    entity: &str,
    id: Uuid,
    data: &serde_json::Value,
) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO other_rows (entity, entity_id, data) VALUES (?1, ?2, ?3)
         ON CONFLICT (entity, entity_id) DO UPDATE SET data = excluded.data",
    )?
    .execute(params![entity, id, data.to_string()])?;
    Ok(())
}

/// Writes a customer row; shared by local registration and the pull. The email column is
/// lowercased for case-insensitive lookup; the record keeps what was entered. An identical row
/// is left untouched: the pull brings every customer this venue registered back from central's
/// feed, and rewriting it would cost the single writer a page write for nothing.
pub fn upsert_customer(conn: &Connection, c: &CustomerRecord) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO customers (id, phone, email, home_site_id, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET phone = excluded.phone, email = excluded.email,
            home_site_id = excluded.home_site_id, data = excluded.data
         WHERE customers.data IS NOT excluded.data",
    )?
    .execute(params![c.id, c.phone, c.email.as_deref().map(str::to_lowercase), c.home_site_id, ts(c.created_at), serde_json::to_string(c)?],
    )?;
    Ok(())
}

/// Writes a waiver row; shared by local signing and the pull.
pub fn upsert_waiver(conn: &Connection, w: &WaiverRecord) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO waivers (id, customer_id, expires_at, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id,
            expires_at = excluded.expires_at, data = excluded.data
         WHERE waivers.data IS NOT excluded.data",
    )?
    .execute(params![
        w.id,
        w.customer_id,
        ts(w.expires_at),
        serde_json::to_string(w)?
    ])?;
    Ok(())
}

/// The allowed networks of a replicated site, `None` if the site is not (yet) replicated.
pub fn site_networks(
    conn: &Connection,
    site_id: Uuid,
) -> anyhow::Result<Option<Vec<ipnet::IpNet>>> {
    use rusqlite::OptionalExtension;
    let text: Option<String> = conn
        .query_row(
            "SELECT allowed_networks FROM sites WHERE id = ?1",
            [site_id],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| Ok(serde_json::from_str(&t)?)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::append_op;
    use crate::replica::{Replica, customer};
    use aero_shared::wire::{OpKind, ScoreRecord};

    fn person(id: Uuid, site: Uuid, first: &str) -> CustomerRecord {
        CustomerRecord {
            id,
            first_name: first.into(),
            last_name: "Doe".into(),
            birth_date: chrono::NaiveDate::from_ymd_opt(1990, 1, 1).expect("date"),
            phone: Some("+441234567".into()),
            email: Some("Jo@Example.com".into()),
            guardian_id: None,
            home_site_id: site,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn an_identical_customer_is_not_rewritten_but_a_changed_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Uuid::now_v7();
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        let local = person(Uuid::now_v7(), site, "Local");
        upsert_customer(&conn, &local).expect("insert");
        assert_eq!(conn.changes(), 1);
        upsert_customer(&conn, &local).expect("echo");
        assert_eq!(
            conn.changes(),
            0,
            "the echo of an identical row writes nothing"
        );
        let edited = CustomerRecord {
            first_name: "Edited".into(),
            ..local.clone()
        };
        upsert_customer(&conn, &edited).expect("edit");
        assert_eq!(conn.changes(), 1);
        assert_eq!(customer(&conn, local.id).expect("read"), Some(edited));
    }

    fn change(seq: i64, c: &CustomerRecord) -> serde_json::Value {
        serde_json::json!({
            "seq": seq, "entity": "customer", "entity_id": c.id, "op": "upsert", "site_id": null,
            "data": c, "changed_at": Utc::now(),
        })
    }

    fn page(changes: Vec<serde_json::Value>, next_cursor: i64, more: bool) -> PulledPage {
        PulledPage {
            changes: changes
                .iter()
                .map(|change| {
                    PulledChange::new(serde_json::value::to_raw_value(change).expect("raw change"))
                })
                .collect(),
            next_cursor,
            more,
            store_id: Uuid::nil(),
            head: next_cursor,
            acked_seq: 0,
            anchor: None,
        }
    }

    fn first_name(conn: &Connection, id: Uuid) -> Option<String> {
        customer(conn, id).expect("read").map(|c| c.first_name)
    }

    #[test]
    fn a_pull_holds_back_a_row_with_pending_local_ops_and_keeps_what_it_cannot_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Uuid::now_v7();
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        let now = Utc::now();
        let local = person(Uuid::now_v7(), site, "Local");
        upsert_customer(&conn, &local).expect("insert");
        append_op(
            &conn,
            Entity::Customer,
            local.id,
            OpKind::Upsert,
            &local,
            now,
        )
        .expect("op");
        let other = person(Uuid::now_v7(), Uuid::now_v7(), "Other");
        let central = person(local.id, site, "Central");
        let broken = serde_json::json!({ "seq": 12, "entity": "customer", "data": {} });
        let future = serde_json::json!({
            "seq": 13, "entity": "locker", "entity_id": Uuid::now_v7(), "op": "upsert",
            "site_id": site, "data": { "number": 7 }, "changed_at": now,
        });

        let outcome = apply_page(
            &conn,
            &page(
                vec![change(10, &central), change(11, &other), broken, future],
                13,
                false,
            ),
            now,
        )
        .expect("apply");

        assert_eq!((outcome.applied, outcome.held, outcome.skipped), (2, 1, 1));
        assert_eq!(first_name(&conn, local.id).as_deref(), Some("Local"));
        assert_eq!(first_name(&conn, other.id).as_deref(), Some("Other"));
        let kept: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM other_rows WHERE entity = 'locker'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(kept, 1, "an entity this version does not know is kept");
        let (cursor, online): (i64, bool) = conn
            .query_row("SELECT cursor, online FROM sync_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("state");
        assert_eq!((cursor, online), (13, true));

        // The local op is dead-lettered: central's version of the row is applied after all.
        conn.execute("DELETE FROM outbox", []).expect("dead-letter");
        assert_eq!(release_held(&conn, Utc::now()).expect("release"), 1);
        assert_eq!(first_name(&conn, local.id).as_deref(), Some("Central"));
        // Email lookups are case-insensitive; the record keeps what was typed.
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM customers WHERE email = 'jo@example.com'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(found, 2);
    }

    #[test]
    fn a_venue_record_the_replica_holds_is_left_as_it_is_without_decoding_its_echo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Uuid::now_v7();
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        let now = Utc::now();
        let score = ScoreRecord {
            id: Uuid::now_v7(),
            site_id: site,
            game_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            score: 420,
            device_id: None,
            created_at: now,
        };
        assert!(venue::insert_score(&conn, &score).expect("insert"));
        let echo = |seq: i64, id: Uuid, data: serde_json::Value| {
            serde_json::json!({
                "seq": seq, "entity": "score", "entity_id": id, "op": "upsert",
                "site_id": site, "data": data, "changed_at": now,
            })
        };
        // Central's copy of a held record carries nothing new: even one this version could not
        // read is neither decoded nor kept as skipped. An unknown record with the same broken
        // data is still skipped.
        let outcome = apply_page(
            &conn,
            &page(
                vec![
                    echo(7, score.id, serde_json::json!({ "score": "not a number" })),
                    echo(
                        8,
                        Uuid::now_v7(),
                        serde_json::json!({ "score": "not a number" }),
                    ),
                ],
                8,
                false,
            ),
            now,
        )
        .expect("apply");
        assert_eq!((outcome.applied, outcome.skipped), (1, 1));
        let stored: String = conn
            .query_row("SELECT data FROM scores WHERE id = ?1", [score.id], |r| {
                r.get(0)
            })
            .expect("read");
        assert_eq!(
            serde_json::from_str::<ScoreRecord>(&stored).expect("decode"),
            score
        );
    }

    #[test]
    fn a_resync_removes_hq_rows_central_no_longer_has_but_keeps_venue_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Uuid::now_v7();
        let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open");
        let now = Utc::now();
        let product = |id: Uuid, seq: i64| {
            serde_json::json!({
                "seq": seq, "entity": "product", "entity_id": id, "op": "upsert", "site_id": null,
                "changed_at": now, "data": {
                    "id": id, "sku": format!("SKU{seq}"), "name": "Pass", "kind": "pass",
                    "price_cents": 100, "duration_minutes": 60, "active": true, "created_at": now,
                },
            })
        };
        let (kept, lost) = (Uuid::now_v7(), Uuid::now_v7());
        let visitor = person(Uuid::now_v7(), Uuid::now_v7(), "Visitor");
        apply_page(
            &conn,
            &page(
                vec![product(kept, 1), product(lost, 2), change(3, &visitor)],
                3,
                false,
            ),
            now,
        )
        .expect("first");
        crate::sync::recovery::start_resync(&conn).expect("resync");
        let outcome =
            apply_page(&conn, &page(vec![product(kept, 1)], 1, false), now).expect("again");
        assert!(outcome.resync_finished);
        let products: i64 = conn
            .query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))
            .expect("count");
        assert_eq!(products, 1);
        assert_eq!(first_name(&conn, visitor.id).as_deref(), Some("Visitor"));
    }

    #[test]
    fn a_pulled_waiver_text_becomes_current_and_a_resync_drops_one_central_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        let now = Utc::now();
        let text = |seq: i64, version: i64| {
            let id = Uuid::now_v7();
            serde_json::json!({
                "seq": seq, "entity": "waiver_text", "entity_id": id, "op": "upsert",
                "site_id": null, "changed_at": now, "data": {
                    "id": id, "version": version, "title": format!("Waiver v{version}"),
                    "body": "I accept the risks.", "published_at": now, "published_by": "owner",
                },
            })
        };
        let (first, second) = (text(1, 1), text(2, 2));
        let outcome =
            apply_page(&conn, &page(vec![first.clone(), second], 2, false), now).expect("apply");
        assert_eq!((outcome.applied, outcome.skipped), (2, 0));
        let current = crate::replica::waiver_texts::current(&conn).expect("read");
        assert_eq!(current.map(|t| t.version), Some(2));

        // Central was restored to a point before version 2: the resync forgets it.
        crate::sync::recovery::start_resync(&conn).expect("resync");
        apply_page(&conn, &page(vec![first], 1, false), now).expect("again");
        let current = crate::replica::waiver_texts::current_version(&conn).expect("read");
        assert_eq!(current, Some(1));
    }

    #[test]
    fn a_replica_enrolled_for_another_site_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open"));
        assert!(Replica::open(dir.path(), Uuid::now_v7(), 1).is_err());
    }
}
