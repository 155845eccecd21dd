//! A balance from its ledger entries: the plain sum, or, for an account holding grants that
//! lapse (a membership's visits per period), what is still usable at a given instant.
//!
//! Spends use the grant that lapses soonest first, so a customer never loses a visit that a
//! sooner-lapsing grant could have covered. A spend nothing covers (two venues spending the last
//! visit while offline) is a debt: the balance shows it as negative, and the next grant pays it
//! back before anything else.

use chrono::{DateTime, Utc};

/// One ledger entry, as far as its balance goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Movement {
    pub at: DateTime<Utc>,
    pub delta: i64,
    /// A grant that lapses then (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// What is usable at `now` of an account whose entries are `movements`, in the order they
/// happened. Entries after `now` do not count. Without lapsing grants this is the plain sum.
pub fn usable_at(movements: impl IntoIterator<Item = Movement>, now: DateTime<Utc>) -> i64 {
    // Grants with something left: (lapses at, left). Few per customer: a linear scan is fine.
    let mut grants: Vec<(Option<DateTime<Utc>>, i64)> = Vec::new();
    let mut debt: i64 = 0;
    for movement in movements {
        if movement.at > now {
            continue;
        }
        grants.retain(|(lapses, left)| *left > 0 && lapses.is_none_or(|l| l > movement.at));
        if movement.delta > 0 {
            // What is owed is paid back first; a debt lapses with nothing.
            let repaid = movement.delta.min(debt);
            debt -= repaid;
            grants.push((movement.expires_at, movement.delta - repaid));
            continue;
        }
        let mut owed = movement.delta.saturating_neg();
        // Soonest-lapsing first; grants that never lapse last.
        grants.sort_by_key(|(lapses, _)| lapses.map_or((1, DateTime::<Utc>::MAX_UTC), |l| (0, l)));
        for (_, left) in grants.iter_mut() {
            let used = owed.min(*left);
            *left -= used;
            owed -= used;
            if owed == 0 {
                break;
            }
        }
        debt = debt.saturating_add(owed);
    }
    let usable: i64 = grants
        .iter()
        .filter(|(lapses, _)| lapses.is_none_or(|l| l > now))
        .map(|(_, left)| left)
        .sum();
    usable - debt
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(day: i64) -> DateTime<Utc> {
        "2026-03-01T12:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("instant")
            + Duration::days(day)
    }

    fn grant(day: i64, amount: i64, lapses_day: Option<i64>) -> Movement {
        Movement {
            at: at(day),
            delta: amount,
            expires_at: lapses_day.map(at),
        }
    }

    fn spend(day: i64) -> Movement {
        Movement {
            at: at(day),
            delta: -1,
            expires_at: None,
        }
    }

    #[test]
    fn without_lapsing_grants_it_is_the_sum() {
        let movements = [grant(0, 5, None), spend(1), spend(2), grant(3, 2, None)];
        assert_eq!(usable_at(movements, at(10)), 5);
    }

    #[test]
    fn unused_visits_lapse_at_the_end_of_their_period() {
        let movements = [grant(0, 4, Some(30)), spend(1), spend(2)];
        assert_eq!(usable_at(movements, at(29)), 2);
        assert_eq!(usable_at(movements, at(30)), 0);
    }

    #[test]
    fn a_new_period_brings_its_own_visits_and_nothing_rolls_over() {
        let movements = [
            grant(0, 4, Some(30)),
            spend(1),
            grant(30, 4, Some(61)),
            spend(31),
        ];
        assert_eq!(usable_at(movements, at(31)), 3);
    }

    #[test]
    fn spends_use_the_soonest_lapsing_grant_first() {
        // A pack that never lapses and a month of visits: the month's are used first.
        let movements = [grant(0, 2, None), grant(1, 2, Some(30)), spend(2), spend(3)];
        assert_eq!(usable_at(movements, at(29)), 2);
        assert_eq!(usable_at(movements, at(31)), 2);
    }

    #[test]
    fn an_overspend_stays_a_debt_against_the_next_grant() {
        // Two venues spent the last visit while offline: one more than there was.
        let movements = [
            grant(0, 1, Some(30)),
            spend(1),
            spend(1),
            grant(30, 4, Some(61)),
        ];
        assert_eq!(usable_at(movements, at(20)), -1);
        assert_eq!(usable_at(movements, at(31)), 3);
    }

    #[test]
    fn entries_after_the_instant_do_not_count() {
        let movements = [grant(0, 4, Some(30)), spend(5)];
        assert_eq!(usable_at(movements, at(1)), 4);
    }
}
