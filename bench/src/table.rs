//! Markdown tables, which is how scenarios print their results and how docs/benchmarks.md shows
//! them.

/// A markdown table with a header row; columns after the first are right-aligned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    left_columns: usize,
}

impl Table {
    /// A table with these column titles; the first `left_columns` are left-aligned (labels).
    pub fn new(header: &[&str], left_columns: usize) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            left_columns,
        }
    }

    /// Adds a row (cells beyond the header are dropped, missing ones left empty).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The markdown text, ending with a newline.
    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        let rule: Vec<String> = (0..self.header.len())
            .map(|i| if i < self.left_columns { "---" } else { "---:" }.to_owned())
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(&escape_pipes(row)));
        }
        out
    }
}

fn escape_pipes(cells: &[String]) -> Vec<String> {
    cells.iter().map(|c| c.replace('|', "\\|")).collect()
}

/// A number with thousands separators and no decimals: `12,345`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i128;
    let digits = rounded.unsigned_abs().to_string();
    // Groups of three from the right: the first group takes what is left over.
    let first = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = digits[..first.min(digits.len())].to_owned();
    for group in digits.as_bytes()[first.min(digits.len())..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Microseconds as milliseconds with two decimals: `1.23 ms`.
pub fn ms(micros: f64) -> String {
    format!("{:.2} ms", micros / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_numbers() {
        let mut table = Table::new(&["what", "n"], 1);
        table.row(vec!["a|b".into(), "1".into()]);
        assert_eq!(
            table.to_markdown(),
            "| what | n |\n| --- | ---: |\n| a\\|b | 1 |\n"
        );
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(ms(1234.0), "1.23 ms");
    }
}
