//! The rows of a CSV file with their line numbers, fields looked up by
//! column with an error that names the line and the column: one loop for
//! every CSV shellyctl reads (market prices, the DSOs' exports).

/// One non-empty record.
pub struct Row<'a> {
    pub line: usize,
    record: csv::StringRecord,
    cols: &'a [String],
}

impl Row<'_> {
    /// The field of column `c`, or an error naming the line and column.
    pub fn get(&self, c: usize) -> Result<&str, String> {
        self.record.get(c).ok_or_else(|| {
            format!(
                "line {}: missing column {}",
                self.line,
                self.cols.get(c).map_or("?", String::as_str)
            )
        })
    }
}

/// The records of `reader` after its header (`cols`), blank lines skipped.
pub fn rows<'a, R: std::io::Read + 'a>(
    reader: &'a mut csv::Reader<R>,
    cols: &'a [String],
) -> impl Iterator<Item = Result<Row<'a>, String>> + 'a {
    reader.records().filter_map(move |r| match r {
        Err(e) => Some(Err(e.to_string())),
        Ok(record) if record.iter().all(str::is_empty) => None,
        Ok(record) => Some(Ok(Row {
            line: record.position().map_or(0, |p| p.line() as usize),
            record,
            cols,
        })),
    })
}
