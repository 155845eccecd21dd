//! What HQ's reports mean, decided once: the figures both backends compute and the rules their
//! SQL follows. The edge computes the same figures for its own day report, so the rules are
//! also stated for it in `docs/reports.md`.
//!
//! Every report of a day takes a half-open UTC range `[from, to)`: the site's local day, whose
//! bounds the route computes from the site's timezone (a DST day is 23 or 25 hours long). A
//! record belongs to the day its `created_at` falls in, whenever central received it.

use super::{StoreError, StoreResult};
use aero_shared::ledger::{Movement, usable_at};
use aero_shared::wire::{Account, CustomerRecord, ScoreOrder};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A site's day of business.
///
/// - `orders`: the orders of the site created in the day;
/// - `gross_sales_cents`: the sum of those orders' totals;
/// - `refunds_cents`: the sum of the totals of the site's refunds created in the day, whenever
///   their order was sold (a refund lowers the day it is given, never the day of the sale);
/// - `revenue_cents`: `gross_sales_cents - refunds_cents` (negative on a day with more
///   refunds than sales);
/// - `checkins`: the site's check-ins created in the day;
/// - `new_customers`: the customers the site registered in the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyReport {
    pub orders: i64,
    pub gross_sales_cents: i64,
    pub refunds_cents: i64,
    pub revenue_cents: i64,
    pub checkins: i64,
    pub new_customers: i64,
}

impl DailyReport {
    /// The report from the sums a backend takes; revenue follows from them.
    pub fn new(
        orders: i64,
        gross_sales_cents: i64,
        refunds_cents: i64,
        checkins: i64,
        new_customers: i64,
    ) -> Self {
        Self {
            orders,
            gross_sales_cents,
            refunds_cents,
            revenue_cents: gross_sales_cents - refunds_cents,
            checkins,
            new_customers,
        }
    }
}

/// One product's sales in a site's day: over the lines of the site's orders created in the
/// day, the sum of their quantities and of their totals. Refunds do not change it (they give
/// back money by tender, not products). The SKU and name are the ones the lines copied when
/// the product was sold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProductSales {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub sales_cents: i64,
}

/// Sales by product are listed by SKU (byte order, then product id), the same whatever a
/// database's collation would say.
pub fn sort_sales(sales: &mut [ProductSales]) {
    sales.sort_by(|a, b| (&a.sku, a.product_id).cmp(&(&b.sku, b.product_id)));
}

/// A balance below zero: the sum of a customer's ledger entries in one account, all sites
/// together (two venues spending one balance while offline both land, so it can go negative);
/// for membership visits, what is usable at the report's instant (visits lapse, see
/// `aero_shared::ledger`), so an overspend is not hidden by last month's unused visits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NegativeBalance {
    pub customer_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub account: Account,
    pub balance: i64,
}

/// Which scores a leaderboard ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderboardQuery {
    pub game_id: Uuid,
    pub score_order: ScoreOrder,
    /// Only scores posted at this site; every site when `None`.
    pub site_id: Option<Uuid>,
    /// Only scores created in `[from, to)`; all of them when `None`.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub limit: u32,
}

/// One line of a leaderboard: a customer's best score in the window (the highest, or for a
/// `lowest_wins` game the lowest; of equal bests the earliest), ranked by that score, then by
/// when it was made (earlier first), then by customer id. One line per customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LeaderboardEntry {
    pub customer_id: Uuid,
    pub first_name: String,
    pub score: i64,
    /// Where the best score was posted.
    pub site_id: Uuid,
    pub at: DateTime<Utc>,
}

/// How HQ looks a customer up, chain-wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerSearch {
    /// The phone as stored: normalised to digits with an optional leading `+`.
    Phone(String),
    /// The whole address, ignoring case.
    Email(String),
    /// The start of the first name, the last name or "first last", ignoring case.
    Name(String),
}

/// A customer with their balance in each account (zero where they have no entries).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CustomerBalances {
    #[serde(flatten)]
    pub customer: CustomerRecord,
    pub balances: Vec<Balance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub account: Account,
    pub balance: i64,
}

impl CustomerBalances {
    /// Every account, in [`Account::ALL`] order, from the sums a backend found of every account
    /// but visits, and the visits usable now (see [`usable_visits`]).
    pub fn new(customer: CustomerRecord, sums: &[(Account, i64)], visits: i64) -> Self {
        let balances = Account::ALL
            .into_iter()
            .map(|account| Balance {
                account,
                balance: if account == Account::Visits {
                    visits
                } else {
                    sums.iter()
                        .filter(|(a, _)| *a == account)
                        .map(|(_, sum)| sum)
                        .sum()
                },
            })
            .collect();
        Self { customer, balances }
    }
}

/// One `visits` ledger entry as a backend reads it (`data`: the record as pushed, which says
/// when a membership's visits lapse). Backends read them in the order they happened: by
/// customer, then `created_at`, then id.
#[derive(Clone, Debug)]
pub struct VisitEntry {
    pub customer_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub delta: i64,
    pub data: String,
}

/// The visits each customer can use at `now`, from their entries in the order they happened:
/// the rule the edges apply (`aero_shared::ledger::usable_at`), so HQ and the venues agree.
pub fn usable_visits(
    entries: impl IntoIterator<Item = VisitEntry>,
    now: DateTime<Utc>,
) -> StoreResult<BTreeMap<Uuid, i64>> {
    #[derive(Deserialize)]
    struct Lapse {
        #[serde(default)]
        expires_at: Option<DateTime<Utc>>,
    }
    let mut movements: BTreeMap<Uuid, Vec<Movement>> = BTreeMap::new();
    for entry in entries {
        let lapse: Lapse = serde_json::from_str(&entry.data).map_err(|err| {
            StoreError::Other(anyhow::anyhow!(
                "ledger entry of {}: {err}",
                entry.customer_id
            ))
        })?;
        movements
            .entry(entry.customer_id)
            .or_default()
            .push(Movement {
                at: entry.created_at,
                delta: entry.delta,
                expires_at: lapse.expires_at,
            });
    }
    Ok(movements
        .into_iter()
        .map(|(customer_id, movements)| (customer_id, usable_at(movements, now)))
        .collect())
}

/// The negative-balance report from what a backend found: the negative sums of every account
/// but visits, and every customer's visit entries with their names. Lowest first, then by
/// customer id and account.
pub fn negative_balances(
    mut sums: Vec<NegativeBalance>,
    visits: Vec<(VisitEntry, String, String)>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<NegativeBalance>> {
    let mut names: BTreeMap<Uuid, (String, String)> = BTreeMap::new();
    let entries = visits
        .into_iter()
        .map(|(entry, first_name, last_name)| {
            names.insert(entry.customer_id, (first_name, last_name));
            entry
        })
        .collect::<Vec<_>>();
    for (customer_id, balance) in usable_visits(entries, now)? {
        if balance < 0 {
            let (first_name, last_name) = names.remove(&customer_id).unwrap_or_default();
            sums.push(NegativeBalance {
                customer_id,
                first_name,
                last_name,
                account: Account::Visits,
                balance,
            });
        }
    }
    sums.sort_by(|a, b| {
        (a.balance, a.customer_id, a.account.as_str()).cmp(&(
            b.balance,
            b.customer_id,
            b.account.as_str(),
        ))
    });
    Ok(sums)
}

/// Escapes `text` for a `LIKE ... ESCAPE '\'` pattern: `%`, `_` and `\` (and `[`, which SQL
/// Server reads as a character class) match themselves.
pub fn like_prefix(text: &str, escape_brackets: bool) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') || (escape_brackets && c == '[') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_is_sales_less_refunds() {
        let report = DailyReport::new(3, 4500, 1500, 2, 1);
        assert_eq!(report.revenue_cents, 3000);
        assert_eq!(DailyReport::new(0, 0, 700, 0, 0).revenue_cents, -700);
    }

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(like_prefix("a%b_c\\", false), "a\\%b\\_c\\\\%");
        assert_eq!(like_prefix("[x", true), "\\[x%");
        assert_eq!(like_prefix("[x", false), "[x%");
    }
}
