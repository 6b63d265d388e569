//! The tfload side of `scripts/bench/bench.py --only tfrecord` (scripts/bench/bench_tfrecord.py):
//! reads the TFRecord files of `TFLOAD_BENCH_PATTERN` as a data set (index and checksums on open),
//! then one epoch of batches of 32 through the batch loader, and prints the timings as JSON. The
//! benchmark runs it as `cargo run --release --example bench_tfrecord`.

use std::time::Instant;

use std::sync::Arc;

use tfload::data::{BatchLoader, Dataset, FeatureMapping, InputSpec, LoaderOptions, TfRecordDataset, TfRecordOptions};
use tfload::DType;

fn main() {
    let pattern = std::env::var("TFLOAD_BENCH_PATTERN").expect("TFLOAD_BENCH_PATTERN names the files");
    let feature = std::env::var("TFLOAD_BENCH_FEATURE").unwrap_or_else(|_| "image/encoded".to_string());
    let started = Instant::now();
    let mapping = FeatureMapping { input: feature, label: Some("image/class/label".to_string()) };
    let input = InputSpec { shape: vec![8, 8, 1], dtype: DType::Float32 };
    let dataset: Arc<dyn Dataset> =
        Arc::new(TfRecordDataset::open(pattern.as_ref(), mapping, input, TfRecordOptions::default()).unwrap());
    let opened = started.elapsed().as_secs_f64();
    let loader = BatchLoader::new(
        dataset.clone(),
        LoaderOptions { batch_size: 32, shuffle: false, prefetch: 4, ..LoaderOptions::default() },
    );
    let examples: usize = loader.epoch(0, 0).map(|batch| batch.unwrap().len()).sum();
    let total = started.elapsed().as_secs_f64();
    assert_eq!(examples, dataset.len());
    println!("TFLOAD_BENCH {{\"records\": {examples}, \"open_seconds\": {opened}, \"total_seconds\": {total}}}");
}
