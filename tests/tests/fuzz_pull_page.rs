//! Fuzzing the edge's pull-page applier: changes of central's feed, valid or broken one field at
//! a time, under any entity and op, or arbitrary JSON. Whatever a page holds, applying it never
//! fails the page (which would stall the venue's feed behind it), every change is accounted for
//! (applied, held or kept aside as skipped), a skipped change leaves no trace in the replica's
//! data, and the cursor only moves forward.
//!
//! Bounded for CI; `PROPTEST_CASES=5000 cargo test -p aero-tests --test fuzz_pull_page` runs a
//! longer campaign.

use aero_edge::replica::Replica;
use aero_edge::replica::apply::{PulledChange, PulledPage, apply_page};
use aero_tests::fuzz::{Mutation, fixed_instant, json_value, mutation, venue_day};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use uuid::Uuid;

/// Tables that record the feed itself rather than replicated data.
const FEED_TABLES: [&str; 4] = [
    "sync_state",
    "skipped_changes",
    "held_changes",
    "resync_seen",
];

/// One change of a fuzzed page.
#[derive(Clone, Debug)]
enum FuzzChange {
    /// A record of the venue day, mutated, as an upsert or delete with this seq.
    Record {
        index: usize,
        mutation: Mutation,
        op: &'static str,
        seq: i64,
    },
    /// A change whose envelope (seq, entity, op, ids, time) is itself broken.
    Envelope(Value),
    /// Anything at all.
    Junk(Value),
}

fn fuzz_change(day_len: usize) -> impl Strategy<Value = FuzzChange> {
    prop_oneof![
        6 => (0..day_len, mutation(), prop::sample::select(vec!["upsert", "upsert", "delete", "merge"]), any::<i64>())
            .prop_map(|(index, mutation, op, seq)| FuzzChange::Record { index, mutation, op, seq }),
        1 => prop::collection::btree_map(
            prop::sample::select(vec!["seq", "entity", "entity_id", "op", "site_id", "data", "changed_at"]),
            json_value(),
            0..7,
        )
        .prop_map(|map| FuzzChange::Envelope(Value::Object(
            map.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ))),
        1 => json_value().prop_map(FuzzChange::Junk),
    ]
}

#[test]
fn any_page_is_applied_change_by_change_and_a_skipped_change_leaves_no_trace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let site = Uuid::now_v7();
    let (_replica, conn) = Replica::open(dir.path(), site, 1).expect("open the replica");
    let conn = RefCell::new(conn);
    let (applied, skipped) = (Cell::new(0usize), Cell::new(0usize));
    let day = venue_day(site, Uuid::now_v7(), Uuid::now_v7());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let strategy = (
        prop::collection::vec(fuzz_change(day.len()), 1..6),
        any::<i64>(),
    );
    runner
        .run(&strategy, |(changes, next_cursor)| {
            let mut conn = conn.borrow_mut();
            for change in &changes {
                let value = render(change, &day, site);
                let before = data_fingerprint(&conn);
                let cursor_before = cursor(&conn);
                let page = PulledPage {
                    changes: vec![PulledChange::new(
                        serde_json::value::to_raw_value(&value).expect("raw change"),
                    )],
                    next_cursor,
                    more: false,
                    store_id: Uuid::nil(),
                    head: 0,
                    acked_seq: 0,
                    anchor: None,
                };
                let tx = conn.transaction().expect("transaction");
                let outcome = apply_page(&tx, &page, fixed_instant()).map_err(|err| {
                    TestCaseError::fail(format!("the page failed on {value}: {err:#}"))
                })?;
                tx.commit().expect("commit");
                prop_assert_eq!(outcome.applied + outcome.held + outcome.skipped, 1);
                applied.set(applied.get() + outcome.applied);
                skipped.set(skipped.get() + outcome.skipped);
                if outcome.skipped == 1 {
                    prop_assert_eq!(
                        data_fingerprint(&conn),
                        before,
                        "skipping {} left a trace in the replica",
                        value
                    );
                }
                prop_assert_eq!(cursor(&conn), cursor_before.max(next_cursor));
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    // The campaign reached both paths: changes applied, and changes kept aside.
    assert!(
        applied.get() > 0 && skipped.get() > 0,
        "applied {} skipped {}",
        applied.get(),
        skipped.get()
    );
}

/// The change a case describes, as central's feed would carry it.
fn render(change: &FuzzChange, day: &[aero_tests::fuzz::Sample], site: Uuid) -> Value {
    match change {
        FuzzChange::Record {
            index,
            mutation,
            op,
            seq,
        } => {
            let sample = mutation.apply(&day[*index]);
            json!({
                "seq": seq,
                "entity": sample.entity.as_str(),
                "entity_id": sample.id,
                "op": op,
                "site_id": site,
                "data": sample.data,
                "changed_at": fixed_instant(),
            })
        }
        FuzzChange::Envelope(value) | FuzzChange::Junk(value) => value.clone(),
    }
}

fn cursor(conn: &Connection) -> i64 {
    conn.query_row("SELECT cursor FROM sync_state WHERE id = 1", [], |r| {
        r.get(0)
    })
    .expect("cursor")
}

/// Every row of every replicated table, as text.
fn data_fingerprint(conn: &Connection) -> String {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("tables");
    let mut out = String::new();
    for table in tables
        .iter()
        .filter(|t| !FEED_TABLES.contains(&t.as_str()) && !t.starts_with("refinery"))
    {
        let mut statement = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
            .or_else(|_| conn.prepare(&format!("SELECT * FROM \"{table}\"")))
            .expect("select");
        let columns = statement.column_count();
        let mut rows = statement.query([]).expect("rows");
        out.push_str(table);
        out.push('\n');
        while let Some(row) = rows.next().expect("row") {
            for column in 0..columns {
                let value: rusqlite::types::Value = row.get(column).expect("value");
                out.push_str(&format!("{value:?}|"));
            }
            out.push('\n');
        }
    }
    out
}
