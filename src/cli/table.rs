//! Borderless, aligned text tables for terminal output.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// A table with a header row and no borders, as `ls -l` style listings look.
pub fn new(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

/// Right-aligns the given columns (numbers).
pub fn align_right(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Prints a table indented by `indent` spaces, without trailing blanks.
pub fn print_indented(out: &mut impl std::io::Write, table: &Table, indent: usize) -> std::io::Result<()> {
    for line in table.lines() {
        writeln!(out, "{:indent$}{}", "", line.trim_end())?;
    }
    Ok(())
}
