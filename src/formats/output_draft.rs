//! A draft of the data shard a run will publish, started when the run starts. The model a run
//! publishes is one data shard that must be on disk (`fsync`) before the output is renamed into
//! place; for a frozen base, nearly all of its bytes are the base's. Written only at the end,
//! that flush is the slowest part of publishing (ResNet50 with Adam slots: 280 MB, about 0.9 s
//! on this machine, against 0.07 s for the copy itself). So a fresh run copies its base shard to
//! a draft at once and flushes it in the background while it trains; at the end,
//! [`crate::formats::linked_bundle::copy_as_one_shard`] takes the draft over, compares each
//! value's bytes with the draft's and writes only those that differ, and the final flush has
//! little left to do. Nothing in the draft is trusted: a draft that is stale, short or damaged
//! still ends as the exact bytes of the published shard, because every byte is compared.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::formats::checkpoint_writer::{data_file_name, read_index, INDEX_FILE};
use crate::output_dir::{io_error, remove_dir_if_present};

/// The folder of the draft in a run's working directory.
pub const DRAFT_DIR: &str = "output-draft";

/// The draft's data file in the working directory `work`, flushed to disk by a background
/// thread: the one already there (a resumed run keeps the draft its first start made), or else a
/// copy of the single data shard of the bundle in `base_variables`. `None` when there is none
/// and the base has more than one shard (the published shard's layout is then not the base's).
pub fn start(base_variables: &Path, work: &Path) -> Result<Option<PathBuf>> {
    let dir = work.join(DRAFT_DIR);
    let draft = dir.join(data_file_name(0, 1));
    if !draft.is_file() {
        let (header, _) = read_index(&base_variables.join(INDEX_FILE))?;
        if header.num_shards.max(1) != 1 {
            return Ok(None);
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let partial = dir.join("draft.tmp");
        let source = base_variables.join(data_file_name(0, 1));
        std::fs::copy(&source, &partial).map_err(io_error(&partial))?;
        std::fs::rename(&partial, &draft).map_err(io_error(&draft))?;
    }
    let file = File::open(&draft).map_err(io_error(&draft))?;
    std::thread::Builder::new()
        .name("tfload-draft-flush".into())
        .spawn(move || {
            // Only an early start of the write-back: the final flush is what makes it durable.
            let _ = file.sync_data();
        })
        .map_err(io_error(&draft))?;
    Ok(Some(draft))
}

/// Removes the draft folder of `work`, if any (a run that published without it).
pub fn remove(work: &Path) -> Result<()> {
    remove_dir_if_present(&work.join(DRAFT_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP_VARIABLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/saved_models/mlp_digits/variables");

    #[test]
    fn a_draft_is_the_base_shard_and_a_resumed_run_keeps_its_own() {
        let work = tempfile::tempdir().unwrap();
        let base = Path::new(MLP_VARIABLES);
        let draft = start(base, work.path()).unwrap().unwrap();
        assert_eq!(draft, work.path().join(DRAFT_DIR).join(data_file_name(0, 1)));
        assert!(std::fs::read(&draft).unwrap() == std::fs::read(base.join(data_file_name(0, 1))).unwrap());
        std::fs::write(&draft, b"left by an interrupted run").unwrap();
        assert_eq!(start(base, work.path()).unwrap().unwrap(), draft);
        assert_eq!(std::fs::read(&draft).unwrap(), b"left by an interrupted run");
        remove(work.path()).unwrap();
        assert!(!work.path().join(DRAFT_DIR).exists());
        remove(work.path()).unwrap();
    }
}
