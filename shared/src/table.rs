//! Plain-text tables for the ops commands: left-aligned columns two spaces apart, the last
//! column unpadded so lines carry no trailing blanks.

/// Renders `header` and `rows` as aligned columns, one line each, newline-terminated.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Two-column "label  value" lines, labels padded to the longest.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let text = render(
            &["ID", "NAME", "KIND"],
            &[
                vec!["1".into(), "Front desk kiosk".into(), "kiosk".into()],
                vec!["22".into(), "POS".into(), "pos".into()],
            ],
        );
        assert_eq!(
            text,
            "ID  NAME              KIND\n1   Front desk kiosk  kiosk\n22  POS               pos\n"
        );
    }

    #[test]
    fn labels_are_padded_to_the_longest() {
        assert_eq!(
            key_values(&[("site", "a".into()), ("pending ops", "3".into())]),
            "site         a\npending ops  3\n"
        );
    }
}
