//! Edge builds compared on one machine. `--edge A --edge B --rounds N` runs the scenario once
//! per build in turn, round after round (A B, B A, A B, ...), so every build meets the machine
//! in the same states (a VM's speed can drift by tens of percent within minutes, more than most
//! changes are worth). A table then sets every timed load's figures side by side, with each
//! later build against the first, round by round. Central and the load generator are this
//! binary's own, the same for every build: only the edge differs.

use crate::measure::Figures;
use std::path::PathBuf;

/// The most builds one comparison takes: each is named by a letter.
pub(crate) const MAX_BUILDS: usize = 26;

/// What one run of one build printed.
pub(crate) struct Run {
    pub(crate) build: usize,
    pub(crate) rows: Vec<Figures>,
}

/// The order the builds run in during `round` (from 1): first to last, then last to first in the
/// next round (A B, B A, A B, ...), so a machine that speeds up or slows down during a round
/// favours no build over the rounds.
pub(crate) fn order(round: u32, builds: usize) -> Vec<usize> {
    if round % 2 == 1 {
        (0..builds).collect()
    } else {
        (0..builds).rev().collect()
    }
}

/// The letter a build goes by in headings and in the comparison.
pub(crate) fn letter(build: usize) -> char {
    char::from(b'A' + u8::try_from(build % MAX_BUILDS).unwrap_or(0))
}

/// Prints the comparison of `runs` (in the order they ran) of the builds `edges`.
pub(crate) fn print(edges: &[PathBuf], runs: &[Run]) {
    println!("## Comparison of edge builds\n");
    for (build, edge) in edges.iter().enumerate() {
        println!("- {}: `{}`", letter(build), edge.display());
    }
    println!(
        "\nEach cell lists the rounds in order. The last column is each build's per-second \
         figure against A's in the same round, then the mean of those rounds.\n"
    );
    println!("| load | build | per second | p99 ms | edge CPU µs/request | per second against A |");
    println!("|---|---|---|---|---|---|");
    let mut loads: Vec<&str> = Vec::new();
    for row in runs.iter().flat_map(|run| &run.rows) {
        if !loads.contains(&row.load.as_str()) {
            loads.push(&row.load);
        }
    }
    for load in loads {
        let baseline = rounds_of(runs, 0, load);
        for build in 0..edges.len() {
            let rounds = rounds_of(runs, build, load);
            let list = |figure: fn(&Figures) -> String| {
                rounds
                    .iter()
                    .map(|f| figure(f))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let against = if build == 0 {
                String::new()
            } else {
                against_baseline(&baseline, &rounds)
            };
            println!(
                "| {} | {} | {} | {} | {} | {against} |",
                if build == 0 { load } else { "" },
                letter(build),
                list(|f| format!("{:.0}", f.per_second)),
                list(|f| format!("{:.2}", f.p99_ms)),
                list(|f| format!("{:.1}", f.edge_us)),
            );
        }
    }
    println!();
}

/// The figures of `load` in each run of `build`, in the order they ran.
fn rounds_of<'a>(runs: &'a [Run], build: usize, load: &str) -> Vec<&'a Figures> {
    runs.iter()
        .filter(|run| run.build == build)
        .filter_map(|run| run.rows.iter().find(|row| row.load == load))
        .collect()
}

/// `+12.0% / -3.1% (mean +4.5%)`: each round's per-second change against the baseline's run of
/// the same round, then their mean.
fn against_baseline(baseline: &[&Figures], rounds: &[&Figures]) -> String {
    let changes: Vec<f64> = baseline
        .iter()
        .zip(rounds)
        .filter(|(base, _)| base.per_second > 0.0)
        .map(|(base, this)| (this.per_second / base.per_second - 1.0) * 100.0)
        .collect();
    if changes.is_empty() {
        return "-".into();
    }
    let mean = changes.iter().sum::<f64>() / changes.len() as f64;
    let each: Vec<String> = changes.iter().map(|c| format!("{c:+.1}%")).collect();
    format!("{} (mean {mean:+.1}%)", each.join(" / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(per_second: f64) -> Figures {
        Figures {
            load: "orders".into(),
            per_second,
            p99_ms: 1.0,
            edge_us: 10.0,
        }
    }

    #[test]
    fn each_round_is_set_against_the_baselines_run_of_the_same_round() {
        let (a1, a2) = (figures(1000.0), figures(2000.0));
        let (b1, b2) = (figures(1100.0), figures(1900.0));
        assert_eq!(
            against_baseline(&[&a1, &a2], &[&b1, &b2]),
            "+10.0% / -5.0% (mean +2.5%)"
        );
        assert_eq!(against_baseline(&[], &[&b1]), "-");
    }

    #[test]
    fn every_other_round_runs_the_builds_in_reverse() {
        assert_eq!(order(1, 3), [0, 1, 2]);
        assert_eq!(order(2, 3), [2, 1, 0]);
        assert_eq!(order(3, 2), [0, 1]);
        assert_eq!(order(1, 1), [0]);
    }

    #[test]
    fn builds_are_lettered_in_the_order_given() {
        assert_eq!(letter(0), 'A');
        assert_eq!(letter(2), 'C');
        assert_eq!(letter(MAX_BUILDS - 1), 'Z');
    }
}
