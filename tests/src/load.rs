//! A customer-registration write load against an edge, and the checks that every acknowledged
//! write reached central exactly once: shared by the tests that interrupt an edge mid-burst.

use crate::TestCentral;
use reqwest::Client;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn customer_body(first: &str, phone: &str) -> serde_json::Value {
    json!({
        "first_name": first,
        "last_name": "Jumper",
        "birth_date": "1990-04-01",
        "phone": phone,
        "email": null,
    })
}

/// A phone number already in normalized form, so the edge and central store it verbatim.
pub fn phone(n: usize) -> String {
    format!("+4477{n:08}")
}

/// The phones of every customer in the edge's replica (its own and pulled ones), read from
/// `edge.db` directly.
pub fn edge_customer_phones(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open edge.db");
    let mut stmt = conn
        .prepare("SELECT phone FROM customers ORDER BY phone")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Asserts that every phone in `acknowledged` is at central exactly once, that central holds
/// nothing but `attempted` phones, each at most once, and that central holds exactly the
/// customers in `edge_phones` (what the edge committed, acknowledged or not).
pub async fn assert_exactly_once(
    central: &TestCentral,
    acknowledged: &HashSet<String>,
    attempted: &[String],
    edge_phones: &[String],
) {
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let mut at_central = HashSet::new();
    for phone in attempted {
        let found = store.customers_by_phone(phone).await.expect("query").len();
        assert!(found <= 1, "{phone} is at central {found} times");
        if acknowledged.contains(phone) {
            assert_eq!(found, 1, "acknowledged {phone} is missing at central");
        }
        if found == 1 {
            at_central.insert(phone.clone());
        }
    }
    let total = usize::try_from(store.count_customers().await.expect("count")).expect("count");
    assert_eq!(
        total,
        at_central.len(),
        "central holds customers nobody attempted"
    );
    let committed: HashSet<String> = edge_phones.iter().cloned().collect();
    assert_eq!(
        committed.len(),
        edge_phones.len(),
        "duplicate rows at the edge"
    );
    assert!(
        committed == at_central,
        "central and the edge disagree: {} only at the edge, {} only at central",
        committed.difference(&at_central).count(),
        at_central.difference(&committed).count()
    );
}

/// One writer per task: registers customers with fresh phones until told to stop or until the
/// edge stops answering; records what was acknowledged with 201.
pub struct Burst {
    pub next: Arc<AtomicUsize>,
    /// Phones the edge answered 201 for.
    pub acknowledged: Arc<Mutex<HashSet<String>>>,
    /// Every phone sent, answered or not.
    pub attempted: Arc<Mutex<Vec<String>>>,
    /// Writers that stopped because a request got no answer (the edge went away).
    pub interrupted: Arc<AtomicUsize>,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub fn new() -> Self {
        Self {
            next: Arc::new(AtomicUsize::new(1)),
            acknowledged: Arc::default(),
            attempted: Arc::default(),
            interrupted: Arc::default(),
        }
    }

    pub fn spawn_writers(
        &self,
        writers: usize,
        base: String,
        key: String,
        stop: Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..writers)
            .map(|_| {
                let (next, acknowledged, attempted, interrupted) = (
                    Arc::clone(&self.next),
                    Arc::clone(&self.acknowledged),
                    Arc::clone(&self.attempted),
                    Arc::clone(&self.interrupted),
                );
                let (base, key, stop) = (base.clone(), key.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let client = Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("client");
                    while !stop.load(Ordering::SeqCst) {
                        let phone = phone(next.fetch_add(1, Ordering::SeqCst));
                        attempted.lock().expect("lock").push(phone.clone());
                        let sent = client
                            .post(format!("{base}/v1/customers"))
                            .header("x-api-key", &key)
                            .json(&customer_body("Burst", &phone))
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status() == 201 => {
                                acknowledged.lock().expect("lock").insert(phone);
                            }
                            Ok(response) => {
                                panic!("the edge answered {} to a valid write", response.status())
                            }
                            Err(_) => {
                                interrupted.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                })
            })
            .collect()
    }

    pub fn acknowledged(&self) -> HashSet<String> {
        self.acknowledged.lock().expect("lock").clone()
    }

    pub fn attempted(&self) -> Vec<String> {
        self.attempted.lock().expect("lock").clone()
    }
}
