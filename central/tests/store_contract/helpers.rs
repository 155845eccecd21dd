//! Builders and small queries the contract's tests share.

use aero_central::store::{self, Actor, SiteChanges, Store};
use aero_shared::auth::principal::{DeviceKind, Role};
use aero_shared::wire::{
    Account, CheckinRecord, CustomerRecord, DeviceRecord, Entity, GameRecord, LedgerEntry,
    LedgerReason, OpKind, OrderLine, OrderRecord, ProductKind, ProductRecord, PushOp, RefundRecord,
    RefundTender, ScoreOrder, ScoreRecord, SiteRecord, Tender, TenderKind, UserRecord,
};
use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use std::sync::Arc;
use uuid::Uuid;

pub(crate) fn now() -> DateTime<Utc> {
    // Both backends keep milliseconds.
    Utc::now().trunc_subsecs(3)
}

pub(crate) fn actor() -> Actor {
    Actor::system("contract-test")
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

pub(crate) async fn new_site(store: &Arc<dyn Store>) -> SiteRecord {
    let site = SiteRecord {
        id: Uuid::now_v7(),
        name: unique("site"),
        timezone: "Europe/London".into(),
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        created_at: now(),
    };
    store
        .create_site(&actor(), &site)
        .await
        .expect("create site");
    site
}

pub(crate) fn device(site_id: Uuid, key_hash: &str) -> DeviceRecord {
    DeviceRecord {
        id: Uuid::now_v7(),
        site_id,
        name: "kiosk".into(),
        kind: DeviceKind::Kiosk,
        allowed_networks: vec![],
        key_hash: key_hash.to_string(),
        created_at: now(),
        revoked_at: None,
    }
}

pub(crate) fn user(role: Role, site_ids: Vec<Uuid>) -> UserRecord {
    UserRecord {
        id: Uuid::now_v7(),
        username: unique("user"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        role,
        site_ids,
        created_at: now(),
        disabled_at: None,
        token_version: 0,
    }
}

pub(crate) fn product(sku: &str) -> ProductRecord {
    ProductRecord {
        id: Uuid::now_v7(),
        sku: sku.to_string(),
        name: "Jump 60".into(),
        kind: ProductKind::Pass,
        price_cents: 1500,
        duration_minutes: Some(60),
        grant: None,
        active: true,
        created_at: now(),
    }
}

/// The op's record as a JSON tree.
pub(crate) fn data_of(op: &PushOp) -> serde_json::Value {
    serde_json::from_str(op.data.get()).unwrap()
}

/// Edits the op's record: the tree `edit` leaves is what the op sends.
pub(crate) fn edit_data(op: &mut PushOp, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut data = data_of(op);
    edit(&mut data);
    op.data = serde_json::value::to_raw_value(&data).unwrap();
}

pub(crate) fn customer_op(site_id: Uuid, seq: i64) -> PushOp {
    let customer = CustomerRecord {
        id: Uuid::now_v7(),
        first_name: "Ada".into(),
        last_name: unique("Lovelace"),
        birth_date: NaiveDate::from_ymd_opt(2010, 5, 1).unwrap(),
        phone: Some(format!("+44{}", 7_000_000_000i64 + seq)),
        email: None,
        guardian_id: None,
        home_site_id: site_id,
        created_at: now(),
    };
    PushOp {
        seq,
        op_id: Uuid::now_v7(),
        entity: Entity::Customer,
        entity_id: customer.id,
        kind: OpKind::Upsert,
        data: serde_json::value::to_raw_value(&customer).unwrap(),
    }
}

pub(crate) async fn pull_all(
    store: &Arc<dyn Store>,
    site: Uuid,
    after: i64,
) -> Vec<aero_shared::wire::Change> {
    store
        .pull(site, after, 10_000, usize::MAX)
        .await
        .expect("pull")
}

/// Every editable field of `site`, as a change.
pub(crate) fn all_of(site: &SiteRecord) -> SiteChanges {
    SiteChanges {
        name: Some(site.name.clone()),
        timezone: Some(site.timezone.clone()),
        allowed_networks: Some(site.allowed_networks.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Venue operations: orders, refunds, the ledger, check-ins and scores pushed by edges; HQ's
// reports over them.
// ---------------------------------------------------------------------------------------------

/// An op carrying a venue record, of the kind the record travels as.
pub(crate) fn venue_op<T: serde::Serialize>(
    seq: i64,
    entity: Entity,
    id: Uuid,
    record: &T,
) -> PushOp {
    PushOp {
        seq,
        op_id: Uuid::now_v7(),
        entity,
        entity_id: id,
        kind: if entity == Entity::LedgerEntry {
            OpKind::LedgerAppend
        } else {
            OpKind::Upsert
        },
        data: serde_json::value::to_raw_value(record).unwrap(),
    }
}

pub(crate) fn customer_record(site_id: Uuid, first_name: &str) -> CustomerRecord {
    CustomerRecord {
        id: Uuid::now_v7(),
        first_name: first_name.into(),
        last_name: unique("Venue"),
        birth_date: NaiveDate::from_ymd_opt(2012, 3, 4).unwrap(),
        phone: Some(format!(
            "+1555{}",
            Uuid::now_v7().as_u128() % 10_000_000_000
        )),
        email: None,
        guardian_id: None,
        home_site_id: site_id,
        created_at: now(),
    }
}

/// A product line of an order: (product id, sku, quantity, unit price).
pub(crate) type Line = (Uuid, &'static str, i32, i64);

pub(crate) fn order_record(
    site_id: Uuid,
    created_at: DateTime<Utc>,
    lines: &[Line],
    tenders: &[(TenderKind, i64)],
) -> OrderRecord {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|&(product_id, sku, quantity, unit)| OrderLine {
            product_id,
            sku: sku.into(),
            name: format!("{sku} name"),
            kind: ProductKind::Pass,
            quantity,
            unit_price_cents: unit,
            total_cents: unit * i64::from(quantity),
        })
        .collect();
    OrderRecord {
        id: Uuid::now_v7(),
        site_id,
        customer_id: None,
        total_cents: lines.iter().map(|l| l.total_cents).sum(),
        lines,
        tenders: tenders
            .iter()
            .map(|&(kind, amount_cents)| Tender {
                kind,
                amount_cents,
                received_cents: None,
                change_cents: 0,
                reference: None,
            })
            .collect(),
        change_cents: 0,
        sold_by: "device:pos".into(),
        created_at,
    }
}

pub(crate) fn refund_record(
    order: &OrderRecord,
    kind: TenderKind,
    amount_cents: i64,
    created_at: DateTime<Utc>,
) -> RefundRecord {
    RefundRecord {
        id: Uuid::now_v7(),
        order_id: order.id,
        site_id: order.site_id,
        tenders: vec![RefundTender { kind, amount_cents }],
        total_cents: amount_cents,
        reason: "the trampoline was closed".into(),
        refunded_by: "user:manager".into(),
        created_at,
    }
}

pub(crate) fn ledger_record(
    site_id: Uuid,
    customer_id: Uuid,
    account: Account,
    delta: i64,
) -> LedgerEntry {
    LedgerEntry {
        id: Uuid::now_v7(),
        customer_id,
        account,
        delta,
        reason: if delta > 0 {
            LedgerReason::Purchase
        } else {
            LedgerReason::Spend
        },
        ref_id: None,
        site_id,
        created_at: now(),
        expires_at: None,
    }
}

pub(crate) fn checkin_record(
    site_id: Uuid,
    customer_id: Uuid,
    created_at: DateTime<Utc>,
) -> CheckinRecord {
    CheckinRecord {
        id: Uuid::now_v7(),
        site_id,
        customer_id,
        wristband: unique("W"),
        product_id: Uuid::now_v7(),
        order_id: Some(Uuid::now_v7()),
        ledger_entry_id: None,
        starts_at: created_at,
        ends_at: created_at + Duration::hours(1),
        created_at,
    }
}

pub(crate) fn score_record(
    site_id: Uuid,
    game_id: Uuid,
    customer_id: Uuid,
    score: i64,
    created_at: DateTime<Utc>,
) -> ScoreRecord {
    ScoreRecord {
        id: Uuid::now_v7(),
        site_id,
        game_id,
        customer_id,
        score,
        device_id: None,
        created_at,
    }
}

pub(crate) async fn new_game(store: &Arc<dyn Store>, score_order: ScoreOrder) -> GameRecord {
    let game = GameRecord {
        id: Uuid::now_v7(),
        name: unique("game"),
        score_order,
        created_at: now(),
    };
    store.create_game(&actor(), &game).await.unwrap();
    game
}

pub(crate) fn rejections(outcome: &store::PushOutcome) -> Vec<(i64, String)> {
    outcome
        .rejected
        .iter()
        .map(|r| (r.seq, r.reason.clone()))
        .collect()
}

/// Around now: wide enough for every record these tests create "now".
pub(crate) fn today() -> (DateTime<Utc>, DateTime<Utc>) {
    (now() - Duration::days(1), now() + Duration::days(1))
}
