//! `tfload variables DIR`: every variable of a SavedModel with dtype, shape, size and trainable
//! flag, and totals.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tfload::model::variables::{self, OtherEntry, UnreadCopy};
use tfload::{SavedModel, VariableInfo, VariableTotals};

use super::{table, ModelArgs, OutputFormat};

/// Arguments of `tfload variables`.
#[derive(Debug, Args)]
pub struct VariablesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Shortcut for `--format json`.
    #[arg(long)]
    json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
}

/// The JSON document (`tfload.variables/v1`), documented in docs/json-output.md.
#[derive(Debug, Serialize)]
struct VariablesDocument<'a> {
    schema: &'static str,
    path: String,
    tags: &'a [String],
    variables: &'a [VariableInfo],
    /// Variables above that no function reads, each beside the one the functions read.
    unread_copies: &'a [UnreadCopy],
    /// Checkpoint entries that are not variables: optimizer slots, table contents, object graph.
    other_entries: &'a [OtherEntry],
    /// Entries of the checkpoint index: `variables` + `other_entries`.
    checkpoint_entries: usize,
    /// Totals over `variables`, unread copies left out.
    totals: VariableTotals,
}

pub fn run(args: &VariablesArgs) -> Result<()> {
    let model = SavedModel::open(&args.model.dir)?;
    let meta_graph = model.meta_graph(&args.model.tag)?;
    let listing = variables::list(&meta_graph)?;
    let totals = listing.totals();
    let mut out = std::io::stdout().lock();
    if args.json || args.format == OutputFormat::Json {
        let document = VariablesDocument {
            schema: "tfload.variables/v1",
            path: model.dir().display().to_string(),
            tags: meta_graph.tags(),
            variables: &listing.variables,
            unread_copies: &listing.unread_copies,
            other_entries: &listing.other_entries,
            checkpoint_entries: listing.checkpoint_entries,
            totals,
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut rows = table::new(&["name", "dtype", "shape", "elements", "bytes", "trainable", "note"]);
    for variable in &listing.variables {
        rows.add_row(vec![
            variable.name.clone(),
            variable.dtype.to_string(),
            variable.shape.to_string(),
            optional(variable.elements),
            variable.bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
            if variable.trainable { "yes" } else { "no" }.to_string(),
            listing.copy_of(variable).map(|key| format!("unread copy of {key}")).unwrap_or_default(),
        ]);
    }
    for entry in &listing.other_entries {
        rows.add_row(vec![
            entry.checkpoint_key.clone(),
            entry.dtype.to_string(),
            entry.shape.to_string(),
            optional(entry.shape.num_elements()),
            human_bytes(entry.bytes),
            "-".to_string(),
            entry_note(entry.kind).to_string(),
        ]);
    }
    table::align_right(&mut rows, &[3, 4]);
    table::print_indented(&mut out, &rows, 0)?;
    writeln!(
        out,
        "\n{} variables ({} trainable), {} elements ({} trainable), {}",
        totals.count,
        totals.trainable_count,
        totals.elements,
        totals.trainable_elements,
        human_bytes(totals.bytes)
    )?;
    writeln!(out, "{}", accounting(&listing))?;
    Ok(())
}

/// The line that accounts for every checkpoint entry.
fn accounting(listing: &variables::VariableListing) -> String {
    let copies = listing.unread_copies.len();
    let mut line =
        format!("{} checkpoint entries: {} variables", listing.checkpoint_entries, listing.variables.len() - copies);
    if copies > 0 {
        line += &format!(", {copies} unread copies of them (graph handles no function reads; not in the totals)");
    }
    if !listing.other_entries.is_empty() {
        line += &format!(", {} other entries (listed after the variables)", listing.other_entries.len());
    }
    line
}

fn entry_note(kind: variables::EntryKind) -> &'static str {
    match kind {
        variables::EntryKind::OptimizerSlot => "optimizer slot",
        variables::EntryKind::TableContents => "lookup table contents",
        variables::EntryKind::ObjectGraph => "object graph of the checkpoint",
        variables::EntryKind::Other => "not a variable of the object graph",
    }
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `1.5 KiB`-style sizes; exact bytes below 1 KiB.
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
