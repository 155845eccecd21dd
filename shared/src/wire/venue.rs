//! What a venue sells and runs, as it travels between an edge and central: orders and refunds,
//! the balance ledger, check-ins (jump sessions) and game scores.
//!
//! Each record is written once, where it happened, and never edited: a refund is its own record
//! pointing at its order, and a balance changes only by appending a signed [`LedgerEntry`]. The
//! `check` methods are the rules central enforces on a pushed record (the edge builds records
//! that pass them); a failed check is a permanent rejection with its reason.

use chrono::{DateTime, Days, Months, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ProductKind;

/// Most lines (and most tenders) one order may carry.
pub const MAX_ORDER_LINES: usize = 50;
/// Most units of one product per line.
pub const MAX_LINE_QUANTITY: i32 = 100;
/// Largest amount of any single figure, in cents (a million of the currency).
pub const MAX_AMOUNT_CENTS: i64 = 100_000_000;

/// A balance a customer holds, chain-wide. Never stored as a number: the balance is the sum of
/// the account's ledger entries.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// Money loaded on the customer's account, in cents; spent as an order tender.
    StoredValue,
    /// Arcade credits, spent at game stations.
    ArcadeCredits,
    /// Membership visits, one spent per membership check-in.
    Visits,
}

impl Account {
    pub const ALL: [Account; 3] = [Self::StoredValue, Self::ArcadeCredits, Self::Visits];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StoredValue => "stored_value",
            Self::ArcadeCredits => "arcade_credits",
            Self::Visits => "visits",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// What selling one unit of a product adds to the buyer's balances (credit packs, memberships).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    pub account: Account,
    pub amount: i64,
    /// A membership's visits per period: what one sale grants is usable for this long (until
    /// the start of the venue's local day one period after the sale's), then lapses. `None`:
    /// they never lapse (a pack of visits, credits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<Period>,
}

/// How long a membership's visits last, in the venue's calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Day, Self::Week, Self::Month]
            .into_iter()
            .find(|p| p.as_str() == text)
    }

    /// When what was granted at `granted_at` lapses: the start of the local day one period
    /// after the grant's local date (a month from January 31st ends with February). Whole local
    /// days, so a daylight-saving change never moves it.
    pub fn lapses_at(self, tz: Tz, granted_at: DateTime<Utc>) -> DateTime<Utc> {
        let date = crate::clock::local_date(tz, granted_at);
        let end = match self {
            Self::Day => date.checked_add_days(Days::new(1)),
            Self::Week => date.checked_add_days(Days::new(7)),
            Self::Month => date.checked_add_months(Months::new(1)),
        };
        end.map_or(DateTime::<Utc>::MAX_UTC, |end| {
            crate::clock::start_of_local_day(tz, end)
        })
    }
}

/// Why a ledger entry was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerReason {
    /// A product with a grant was sold (`ref_id`: the order).
    Purchase,
    /// Stored value tendered for an order (`ref_id`: the order).
    Tender,
    /// A stored-value tender given back (`ref_id`: the refund).
    Refund,
    /// Credits spent at a game station or the counter (`ref_id`: none).
    Spend,
    /// A membership visit spent by a check-in (`ref_id`: the check-in).
    Checkin,
    /// A manager's correction.
    Adjustment,
}

impl LedgerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Tender => "tender",
            Self::Refund => "refund",
            Self::Spend => "spend",
            Self::Checkin => "checkin",
            Self::Adjustment => "adjustment",
        }
    }
}

/// One signed change of one balance. Append-only, chain-wide: every venue sees every entry, and
/// two venues spending one balance while offline both land, so the balance is their sum (and
/// may go negative, which HQ sees in its negative-balance report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub account: Account,
    /// Signed: positive adds, negative spends. Never zero.
    pub delta: i64,
    pub reason: LedgerReason,
    /// The order, refund or check-in that caused the entry.
    pub ref_id: Option<Uuid>,
    pub site_id: Uuid,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    /// Visits a membership granted lapse then, used or not (see [`Grant::per`] and
    /// `crate::ledger`). Carried by the entry so every venue counts them alike.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timestamp::option::serialize"
    )]
    pub expires_at: Option<DateTime<Utc>>,
}

impl LedgerEntry {
    pub fn check(&self) -> Result<(), String> {
        if self.delta == 0 || self.delta.unsigned_abs() > MAX_AMOUNT_CENTS.unsigned_abs() {
            return Err("a ledger entry changes a balance by a non-zero, bounded amount".into());
        }
        if self.expires_at.is_some() && self.delta < 0 {
            return Err("only what is granted can lapse, not what is spent".into());
        }
        if self.expires_at.is_some_and(|at| at <= self.created_at) {
            return Err("a grant lapses after it was made".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenderKind {
    Cash,
    /// Taken by an external card terminal; only its reference is kept.
    Card,
    /// Spent from the customer's stored-value ledger.
    StoredValue,
}

impl TenderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cash => "cash",
            Self::Card => "card",
            Self::StoredValue => "stored_value",
        }
    }
}

/// A sold line, priced by the venue from its replica of the catalog (a client's price is never
/// trusted). The product's name and kind are copied so old orders read the same after the
/// catalog changes or the product is retired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub kind: ProductKind,
    pub quantity: i32,
    pub unit_price_cents: i64,
    /// `unit_price_cents * quantity`.
    pub total_cents: i64,
}

/// How part of an order was paid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tender {
    pub kind: TenderKind,
    /// What this tender pays of the total.
    pub amount_cents: i64,
    /// Cash handed over (cash only; at least `amount_cents`).
    pub received_cents: Option<i64>,
    /// Cash given back: `received_cents - amount_cents`.
    pub change_cents: i64,
    /// The card terminal's reference (card only).
    pub reference: Option<String>,
}

/// A sale at a venue. Its tenders pay its total exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderRecord {
    pub id: Uuid,
    pub site_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub lines: Vec<OrderLine>,
    pub tenders: Vec<Tender>,
    pub total_cents: i64,
    /// Cash given back over all tenders.
    pub change_cents: i64,
    /// Who sold it: `device:<id>` or `user:<id>`.
    pub sold_by: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl OrderRecord {
    /// The arithmetic every order obeys.
    pub fn check(&self) -> Result<(), String> {
        if self.lines.is_empty() || self.lines.len() > MAX_ORDER_LINES {
            return Err(format!("an order has 1 to {MAX_ORDER_LINES} lines"));
        }
        if self.tenders.is_empty() || self.tenders.len() > MAX_ORDER_LINES {
            return Err(format!("an order has 1 to {MAX_ORDER_LINES} tenders"));
        }
        let mut total = 0i64;
        for line in &self.lines {
            if !(1..=MAX_LINE_QUANTITY).contains(&line.quantity)
                || !(0..=MAX_AMOUNT_CENTS).contains(&line.unit_price_cents)
                || line.total_cents != line.unit_price_cents * i64::from(line.quantity)
            {
                return Err(format!("line of {} does not add up", line.sku));
            }
            total += line.total_cents;
        }
        if total != self.total_cents {
            return Err("the lines do not add up to the total".into());
        }
        let mut paid = 0i64;
        let mut change = 0i64;
        for tender in &self.tenders {
            if tender.amount_cents <= 0 || tender.amount_cents > MAX_AMOUNT_CENTS {
                return Err("a tender pays a positive, bounded amount".into());
            }
            let expected_change = match (tender.kind, tender.received_cents) {
                (TenderKind::Cash, Some(received))
                    if (tender.amount_cents..=MAX_AMOUNT_CENTS).contains(&received) =>
                {
                    received - tender.amount_cents
                }
                (TenderKind::Cash, None) => 0,
                (TenderKind::Cash, Some(_)) => {
                    return Err("cash received is at least the cash tendered, and bounded".into());
                }
                (_, Some(_)) => return Err("only cash is received and changed".into()),
                (_, None) => 0,
            };
            if tender.change_cents != expected_change {
                return Err("a tender's change does not add up".into());
            }
            paid += tender.amount_cents;
            change += tender.change_cents;
        }
        if paid != self.total_cents {
            return Err("the tenders do not pay the total exactly".into());
        }
        if change != self.change_cents {
            return Err("the change does not add up".into());
        }
        Ok(())
    }

    /// What the order's tenders of one kind paid.
    pub fn paid_by(&self, kind: TenderKind) -> i64 {
        self.tenders
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.amount_cents)
            .sum()
    }
}

/// Money given back on one tender kind of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefundTender {
    pub kind: TenderKind,
    pub amount_cents: i64,
}

/// A full or partial refund of an order: never more, per tender kind, than the order's tenders
/// of that kind paid less what earlier refunds gave back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefundRecord {
    pub id: Uuid,
    pub order_id: Uuid,
    pub site_id: Uuid,
    pub tenders: Vec<RefundTender>,
    pub total_cents: i64,
    pub reason: String,
    /// Who refunded it: `user:<id>`.
    pub refunded_by: String,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl RefundRecord {
    /// Checks the refund against its order and the refunds already taken from it.
    pub fn check(&self, order: &OrderRecord, earlier: &[RefundRecord]) -> Result<(), String> {
        if self.order_id != order.id || self.site_id != order.site_id {
            return Err("a refund belongs to an order of its own site".into());
        }
        if self.tenders.is_empty()
            || self.tenders.len() > MAX_ORDER_LINES
            || self.reason.trim().is_empty()
            || self.reason.len() > 500
        {
            return Err(format!(
                "a refund gives back 1 to {MAX_ORDER_LINES} tenders and says why"
            ));
        }
        if self
            .tenders
            .iter()
            .any(|t| !(1..=MAX_AMOUNT_CENTS).contains(&t.amount_cents))
        {
            return Err("a refund's tenders give back positive, bounded amounts".into());
        }
        let total: i64 = self.tenders.iter().map(|t| t.amount_cents).sum();
        if total != self.total_cents {
            return Err("a refund's tenders add up to its total".into());
        }
        for kind in [TenderKind::Cash, TenderKind::Card, TenderKind::StoredValue] {
            let asked: i64 = self.refunded(kind);
            if asked == 0 {
                continue;
            }
            let given: i64 = earlier.iter().map(|r| r.refunded(kind)).sum();
            if asked + given > order.paid_by(kind) {
                return Err(format!(
                    "refund of {asked} cents by {} is more than the {} cents left of what was paid",
                    kind.as_str(),
                    order.paid_by(kind) - given
                ));
            }
        }
        Ok(())
    }

    /// What this refund gives back on one tender kind.
    pub fn refunded(&self, kind: TenderKind) -> i64 {
        self.tenders
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.amount_cents)
            .sum()
    }
}

/// A jump session started at the gate: a wristband, a customer and the pass (or membership
/// visit) it used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckinRecord {
    pub id: Uuid,
    pub site_id: Uuid,
    pub customer_id: Uuid,
    pub wristband: String,
    pub product_id: Uuid,
    /// The order whose pass this check-in used (pass check-ins).
    pub order_id: Option<Uuid>,
    /// The visit spent (membership check-ins).
    pub ledger_entry_id: Option<Uuid>,
    #[serde(with = "crate::timestamp")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub ends_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl CheckinRecord {
    pub fn check(&self) -> Result<(), String> {
        if self.wristband.trim().is_empty() || self.wristband.len() > 64 {
            return Err("a check-in needs a wristband of at most 64 characters".into());
        }
        if self.ends_at <= self.starts_at {
            return Err("a jump session ends after it starts".into());
        }
        if self.order_id.is_some() == self.ledger_entry_id.is_some() {
            return Err("a check-in uses either a pass or a membership visit".into());
        }
        Ok(())
    }
}

/// A score posted by a game station.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreRecord {
    pub id: Uuid,
    pub site_id: Uuid,
    pub game_id: Uuid,
    pub customer_id: Uuid,
    pub score: i64,
    /// The game station that posted it.
    pub device_id: Option<Uuid>,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl ScoreRecord {
    pub fn check(&self) -> Result<(), String> {
        if !(0..=1_000_000_000_000).contains(&self.score) {
            return Err("a score is between 0 and 10^12".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_entry_beyond_the_bound_either_way_is_refused_the_extremes_of_i64_included() {
        let at = utc("2026-06-01T12:00:00Z");
        let entry = |delta| LedgerEntry {
            id: Uuid::nil(),
            customer_id: Uuid::nil(),
            account: Account::StoredValue,
            delta,
            reason: LedgerReason::Adjustment,
            ref_id: None,
            site_id: Uuid::nil(),
            created_at: at,
            expires_at: None,
        };
        for delta in [
            i64::MIN,
            i64::MAX,
            MAX_AMOUNT_CENTS + 1,
            -MAX_AMOUNT_CENTS - 1,
            0,
        ] {
            assert!(entry(delta).check().is_err(), "delta {delta}");
        }
        for delta in [MAX_AMOUNT_CENTS, -MAX_AMOUNT_CENTS, 1, -1] {
            assert!(entry(delta).check().is_ok(), "delta {delta}");
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("instant")
    }

    #[test]
    fn a_period_lapses_at_the_start_of_a_local_day_whatever_the_clock_change() {
        let london: Tz = "Europe/London".parse().expect("tz");
        // Sold in the evening of March 28th: a week later the clocks have gone forward, and the
        // visits still last until local midnight.
        assert_eq!(
            Period::Week.lapses_at(london, utc("2026-03-28T20:00:00Z")),
            utc("2026-04-03T23:00:00Z")
        );
        assert_eq!(
            Period::Day.lapses_at(london, utc("2026-10-24T23:30:00Z")),
            utc("2026-10-26T00:00:00Z")
        );
        // January 31st plus a month ends with February.
        assert_eq!(
            Period::Month.lapses_at(london, utc("2027-01-31T10:00:00Z")),
            utc("2027-02-28T00:00:00Z")
        );
    }

    fn order(lines: &[(i64, i32)], tenders: Vec<Tender>) -> OrderRecord {
        let lines: Vec<OrderLine> = lines
            .iter()
            .map(|&(price, quantity)| OrderLine {
                product_id: Uuid::nil(),
                sku: "P".into(),
                name: "P".into(),
                kind: ProductKind::Pass,
                quantity,
                unit_price_cents: price,
                total_cents: price * i64::from(quantity),
            })
            .collect();
        let total_cents = lines.iter().map(|l| l.total_cents).sum();
        let change_cents = tenders.iter().map(|t| t.change_cents).sum();
        OrderRecord {
            id: Uuid::nil(),
            site_id: Uuid::nil(),
            customer_id: None,
            lines,
            tenders,
            total_cents,
            change_cents,
            sold_by: "device:x".into(),
            created_at: Utc::now(),
        }
    }

    fn tender(kind: TenderKind, amount: i64, received: Option<i64>) -> Tender {
        Tender {
            kind,
            amount_cents: amount,
            received_cents: received,
            change_cents: received.map_or(0, |r| r - amount),
            reference: None,
        }
    }

    #[test]
    fn an_order_is_paid_exactly_with_change_computed_on_cash() {
        let ok = order(
            &[(1500, 2), (300, 1)],
            vec![
                tender(TenderKind::Cash, 2000, Some(2500)),
                tender(TenderKind::StoredValue, 1300, None),
            ],
        );
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.change_cents, 500);
        let short = order(&[(1500, 2)], vec![tender(TenderKind::Card, 2999, None)]);
        assert!(short.check().unwrap_err().contains("exactly"));
        let over = order(&[(1500, 2)], vec![tender(TenderKind::Card, 3001, None)]);
        assert!(over.check().is_err());
        let mut wrong_line = ok.clone();
        wrong_line.lines[0].total_cents += 1;
        assert!(wrong_line.check().is_err());
        let mut short_cash = ok;
        short_cash.tenders[0].received_cents = Some(1000);
        assert!(short_cash.check().is_err());
    }

    #[test]
    fn refunds_never_exceed_what_each_tender_paid() {
        let paid = order(
            &[(1000, 3)],
            vec![
                tender(TenderKind::Cash, 1000, None),
                tender(TenderKind::Card, 2000, None),
            ],
        );
        let refund = |kind, amount| RefundRecord {
            id: Uuid::now_v7(),
            order_id: paid.id,
            site_id: paid.site_id,
            tenders: vec![RefundTender {
                kind,
                amount_cents: amount,
            }],
            total_cents: amount,
            reason: "broken".into(),
            refunded_by: "user:x".into(),
            created_at: Utc::now(),
        };
        let first = refund(TenderKind::Card, 1500);
        assert_eq!(first.check(&paid, &[]), Ok(()));
        assert!(
            refund(TenderKind::Card, 501)
                .check(&paid, std::slice::from_ref(&first))
                .is_err()
        );
        assert_eq!(
            refund(TenderKind::Card, 500).check(&paid, std::slice::from_ref(&first)),
            Ok(())
        );
        assert!(
            refund(TenderKind::Cash, 1001)
                .check(&paid, &[first])
                .is_err()
        );
        assert!(
            refund(TenderKind::StoredValue, 1)
                .check(&paid, &[])
                .is_err()
        );
    }
}
