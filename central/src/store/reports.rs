//! What HQ's reports mean, decided once: the figures both backends compute and the rules their
//! SQL follows. The edge computes the same figures for its own day report, so the rules are
//! also stated for it in `docs/reports.md`.
//!
//! Every report of a day takes a half-open UTC range `[from, to)`: the site's local day, whose
//! bounds the route computes from the site's timezone (a DST day is 23 or 25 hours long). A
//! record belongs to the day its `created_at` falls in, whenever central received it.

use aero_shared::wire::{Account, CustomerRecord, ScoreOrder};
use chrono::{DateTime, Utc};
use serde::Serialize;
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
/// together (two venues spending one balance while offline both land, so it can go negative).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CustomerBalances {
    #[serde(flatten)]
    pub customer: CustomerRecord,
    pub balances: Vec<Balance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub account: Account,
    pub balance: i64,
}

impl CustomerBalances {
    /// Every account, in [`Account::ALL`] order, from the sums a backend found.
    pub fn new(customer: CustomerRecord, sums: &[(Account, i64)]) -> Self {
        let balances = Account::ALL
            .into_iter()
            .map(|account| Balance {
                account,
                balance: sums
                    .iter()
                    .filter(|(a, _)| *a == account)
                    .map(|(_, sum)| sum)
                    .sum(),
            })
            .collect();
        Self { customer, balances }
    }
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
