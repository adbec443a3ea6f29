//! Formatting of sizes and numbers for the text views.

/// A byte count in human units: `"512 B"`, `"1.50 KiB"`, `"2.00 MiB"`, `"3.25 GiB"` (binary
/// units, two decimals; GiB is the largest unit).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A ratio as `"3.56x"`, or `"-"` when there is none.
pub(crate) fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

/// A number with 2 decimals, or `"-"`.
pub(crate) fn fixed2(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

/// A magnitude with 4 significant digits: fixed notation between 1e-4 and 1e6, scientific
/// outside, trailing zeros trimmed (`0.03125`, `1`, `1.235e-7`).
pub(crate) fn sig4(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    if (-4..6).contains(&exp) {
        let s = format!("{x:.*}", (3 - exp).max(0) as usize);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

/// A fixed-column text table: columns are left-aligned unless marked numeric.
pub(crate) struct Table {
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose header row is `header` (none if empty); `right[i]` right-aligns column `i`.
    pub fn new(header: &[&str], right: &[bool]) -> Table {
        Table {
            right: right.to_vec(),
            rows: if header.is_empty() {
                Vec::new()
            } else {
                vec![header.iter().map(|s| s.to_string()).collect()]
            },
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the table, each line prefixed by `indent`.
    pub fn write(&self, indent: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = width[c] - cell.chars().count();
                if self.right.get(c).copied().unwrap_or(false) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.00 KiB");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(5 << 20), "5.00 MiB");
        assert_eq!(human_size(3 << 30), "3.00 GiB");
        assert_eq!(human_size(2048 << 30), "2048.00 GiB");
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig4(0.03125), "0.03125");
        assert_eq!(sig4(1.0), "1");
        assert_eq!(sig4(0.5), "0.5");
        assert_eq!(sig4(123456.0), "123456");
        assert_eq!(sig4(1.2346e-7), "1.235e-7");
        assert_eq!(sig4(-2.5), "-2.5");
        assert_eq!(times(None), "-");
        assert_eq!(times(Some(3.5)), "3.50x");
    }
}
