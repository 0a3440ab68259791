//! Plain-text tables for the ledger's printouts: columns padded to their widest cell.

use std::fmt::Write;
/// A plain aligned text table.
pub fn table(header: &[String], body: &[Vec<String>], title: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in body {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut s = String::from(title);
    let line = |cells: &[String], s: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(s, "{}", parts.join("  ").trim_end());
    };
    line(header, &mut s);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule, &mut s);
    for r in body {
        line(r, &mut s);
    }
    s
}
