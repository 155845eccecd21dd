//! Inputs for the property-based fuzz tests of the sync decoders: one venue's day of records
//! (a customer, a waiver, an order, a refund of it, ledger entries, a check-in, a score), each
//! kept valid by construction from the wire types, and mutations that break them one field at a
//! time or replace them with arbitrary JSON.
//!
//! Starting from valid records makes most cases reach the deep rules (the arithmetic of an
//! order, a refund against its order, references that must exist) instead of stopping at the
//! first missing field.

use aero_shared::wire::{
    Account, CheckinRecord, CustomerRecord, Entity, LedgerEntry, LedgerReason, OrderLine,
    OrderRecord, ProductKind, RefundRecord, RefundTender, ScoreRecord, Tender, TenderKind,
    WaiverRecord,
};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A record of one entity, as JSON, with the id it is pushed or pulled under.
#[derive(Clone, Debug)]
pub struct Sample {
    pub entity: Entity,
    pub id: Uuid,
    pub data: Value,
}

/// One venue's valid records, in an order in which each one's references come first.
pub fn venue_day(site_id: Uuid, game_id: Uuid, product_id: Uuid) -> Vec<Sample> {
    let at = Utc
        .with_ymd_and_hms(2026, 6, 1, 15, 0, 0)
        .single()
        .expect("a valid instant");
    let customer = CustomerRecord {
        id: Uuid::now_v7(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        birth_date: NaiveDate::from_ymd_opt(2012, 5, 1).expect("a valid date"),
        phone: Some("+447700900123".into()),
        email: Some("ada@example.com".into()),
        guardian_id: None,
        home_site_id: site_id,
        created_at: at,
    };
    let waiver = WaiverRecord {
        id: Uuid::now_v7(),
        customer_id: customer.id,
        site_id,
        signer_name: "Ada Lovelace".into(),
        signed_at: at,
        expires_at: at + Duration::days(365),
        text_version: Some(1),
    };
    let order = OrderRecord {
        id: Uuid::now_v7(),
        site_id,
        customer_id: Some(customer.id),
        lines: vec![OrderLine {
            product_id,
            sku: "JUMP-60".into(),
            name: "Jump 60 minutes".into(),
            kind: ProductKind::Pass,
            quantity: 2,
            unit_price_cents: 1500,
            total_cents: 3000,
        }],
        tenders: vec![
            Tender {
                kind: TenderKind::Cash,
                amount_cents: 1000,
                received_cents: Some(2000),
                change_cents: 1000,
                reference: None,
            },
            Tender {
                kind: TenderKind::Card,
                amount_cents: 2000,
                received_cents: None,
                change_cents: 0,
                reference: Some("AUTH-42".into()),
            },
        ],
        total_cents: 3000,
        change_cents: 1000,
        sold_by: "device:pos".into(),
        created_at: at,
    };
    let refund = RefundRecord {
        id: Uuid::now_v7(),
        order_id: order.id,
        site_id,
        tenders: vec![RefundTender {
            kind: TenderKind::Card,
            amount_cents: 500,
        }],
        total_cents: 500,
        reason: "one jumper went home".into(),
        refunded_by: "user:manager".into(),
        created_at: at + Duration::minutes(5),
    };
    let ledger = |delta: i64, reason: LedgerReason, minutes: i64| LedgerEntry {
        id: Uuid::now_v7(),
        customer_id: customer.id,
        account: Account::StoredValue,
        delta,
        reason,
        ref_id: Some(order.id),
        site_id,
        created_at: at + Duration::minutes(minutes),
        expires_at: None,
    };
    let topped_up = ledger(5000, LedgerReason::Purchase, 1);
    let spent = ledger(-700, LedgerReason::Spend, 2);
    let checkin = CheckinRecord {
        id: Uuid::now_v7(),
        site_id,
        customer_id: customer.id,
        wristband: "W-0042".into(),
        product_id,
        order_id: Some(order.id),
        ledger_entry_id: None,
        starts_at: at + Duration::minutes(10),
        ends_at: at + Duration::minutes(70),
        created_at: at + Duration::minutes(10),
    };
    let score = ScoreRecord {
        id: Uuid::now_v7(),
        site_id,
        game_id,
        customer_id: customer.id,
        score: 9001,
        device_id: None,
        created_at: at + Duration::minutes(20),
    };
    vec![
        sample(Entity::Customer, customer.id, &customer),
        sample(Entity::Waiver, waiver.id, &waiver),
        sample(Entity::Order, order.id, &order),
        sample(Entity::Refund, refund.id, &refund),
        sample(Entity::LedgerEntry, topped_up.id, &topped_up),
        sample(Entity::LedgerEntry, spent.id, &spent),
        sample(Entity::Checkin, checkin.id, &checkin),
        sample(Entity::Score, score.id, &score),
    ]
}

fn sample<T: serde::Serialize>(entity: Entity, id: Uuid, record: &T) -> Sample {
    Sample {
        entity,
        id,
        data: serde_json::to_value(record).expect("a wire record serializes"),
    }
}

/// How a valid record is broken, chosen by the fuzzer.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Left valid.
    Keep,
    /// The field at this (wrapped) index, at any depth, is removed.
    Remove(usize),
    /// The field or element at this (wrapped) index, at any depth, becomes this value.
    Replace(usize, Value),
    /// An unknown field is added at the top.
    Add(String, Value),
    /// The record is replaced entirely.
    Whole(Value),
    /// The record is sent under another entity's name.
    Rename(Entity),
}

impl Mutation {
    /// Applies the mutation to `sample`.
    pub fn apply(&self, sample: &Sample) -> Sample {
        let mut out = sample.clone();
        match self {
            Self::Keep => {}
            Self::Remove(index) => {
                let paths = paths(&out.data);
                if let Some(path) = pick(&paths, *index) {
                    remove_at(&mut out.data, path);
                }
            }
            Self::Replace(index, value) => {
                let paths = paths(&out.data);
                if let Some(path) = pick(&paths, *index)
                    && let Some(slot) = pointer_mut(&mut out.data, path)
                {
                    *slot = value.clone();
                }
            }
            Self::Add(key, value) => {
                if let Value::Object(map) = &mut out.data {
                    map.insert(key.clone(), value.clone());
                }
            }
            Self::Whole(value) => out.data = value.clone(),
            Self::Rename(entity) => out.entity = *entity,
        }
        out
    }
}

/// A strategy for mutations, mostly field-level ones.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => Just(Mutation::Keep),
        3 => any::<usize>().prop_map(Mutation::Remove),
        6 => (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => ("[a-z_]{1,10}", json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
        1 => json_value().prop_map(Mutation::Whole),
        1 => prop::sample::select(Entity::ALL.to_vec()).prop_map(Mutation::Rename),
    ]
}

/// JSON of any shape a few levels deep, leaning to values that sit on the edges of the
/// wire's types: zero, negative and huge numbers, empty and long strings, nil and odd uuids,
/// timestamps far off.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(-1i64),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(i64::from(i32::MAX) + 1),
            any::<i64>(),
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just(String::new()),
            Just(Uuid::nil().to_string()),
            Just(Uuid::max().to_string()),
            Just("9999-12-31T23:59:59Z".to_string()),
            Just("0001-01-01T00:00:00Z".to_string()),
            Just("x".repeat(5000)),
            "\\PC{0,20}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every path to a value inside `value` (objects by key, arrays by index), depth first.
fn paths(value: &Value) -> Vec<Vec<PathStep>> {
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn walk(value: &Value, at: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                at.push(PathStep::Key(key.clone()));
                out.push(at.clone());
                walk(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                at.push(PathStep::Index(index));
                out.push(at.clone());
                walk(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn pick(paths: &[Vec<PathStep>], index: usize) -> Option<&[PathStep]> {
    (!paths.is_empty()).then(|| paths[index % paths.len()].as_slice())
}

fn pointer_mut<'a>(value: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |value, step| match step {
        PathStep::Key(key) => value.get_mut(key.as_str()),
        PathStep::Index(index) => value.get_mut(*index),
    })
}

fn remove_at(value: &mut Value, path: &[PathStep]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (pointer_mut(value, parent), last) {
        (Some(Value::Object(map)), PathStep::Key(key)) => {
            map.remove(key);
        }
        (Some(Value::Array(items)), PathStep::Index(index)) if *index < items.len() => {
            items.remove(*index);
        }
        _ => {}
    }
}

/// A fixed instant for records a fuzz case makes up (the pull's `changed_at`).
pub fn fixed_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 18, 0, 0)
        .single()
        .expect("a valid instant")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venue_day_is_valid_as_built() {
        let site = Uuid::now_v7();
        let day = venue_day(site, Uuid::now_v7(), Uuid::now_v7());
        let order: OrderRecord = serde_json::from_value(day[2].data.clone()).expect("order");
        order.check().expect("the order adds up");
        let entry: LedgerEntry = serde_json::from_value(day[4].data.clone()).expect("entry");
        entry.check().expect("the entry is bounded");
    }

    #[test]
    fn a_removal_takes_out_exactly_one_field_at_any_depth() {
        let sample = Sample {
            entity: Entity::Order,
            id: Uuid::nil(),
            data: json!({"a": 1, "b": {"c": 2, "d": [3, 4]}}),
        };
        // Paths depth first: a, b, b.c, b.d, b.d[0], b.d[1].
        let removed = Mutation::Remove(4).apply(&sample);
        assert_eq!(removed.data, json!({"a": 1, "b": {"c": 2, "d": [4]}}));
        let replaced = Mutation::Replace(2, json!("x")).apply(&sample);
        assert_eq!(replaced.data, json!({"a": 1, "b": {"c": "x", "d": [3, 4]}}));
    }
}
