//! Times tfload's image-folder input pipeline alone, for `scripts/bench/bench.py` (`--only images`,
//! scripts/bench/bench_images.py): `ImageFolderDataset::open` (listing the class folders), then
//! EPOCHS epochs of shuffled batches from a `BatchLoader`, as `tfload train` gets them (each
//! batch read, decoded, converted, resized and stacked on the loader's background thread, the
//! images of a batch in parallel with rayon). Prints one JSON line per epoch and one for open.
//!
//! Run: cargo run --release --example bench_pipeline -- DIR HEIGHT WIDTH CHANNELS BATCH EPOCHS

use std::sync::Arc;
use std::time::Instant;

use tfload::data::{BatchLoader, Dataset, ImageFolderDataset, LoaderOptions};
use tfload::formats::images::{ColorMode, ImageSpec};
use tfload::TensorData;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, height, width, channels, batch, epochs] = args.as_slice() else {
        return Err("usage: bench_pipeline DIR HEIGHT WIDTH CHANNELS BATCH EPOCHS".into());
    };
    let color_mode = ColorMode::from_channels(channels.parse()?).ok_or("channels: 1, 3 or 4")?;
    let spec = ImageSpec { height: height.parse()?, width: width.parse()?, color_mode };
    let (batch_size, epochs): (usize, u64) = (batch.parse()?, epochs.parse()?);

    let start = Instant::now();
    let dataset = ImageFolderDataset::open(dir, spec)?;
    println!("{{\"event\": \"open\", \"seconds\": {}, \"images\": {}}}", start.elapsed().as_secs_f64(), dataset.len());

    let options = LoaderOptions { batch_size, shuffle: true, seed: 0, ..LoaderOptions::default() };
    let loader = BatchLoader::new(Arc::new(dataset), options);
    for epoch in 0..epochs {
        let start = Instant::now();
        let (mut images, mut checksum) = (0usize, 0.0f64);
        for batch in loader.epoch(epoch, 0) {
            let batch = batch?;
            let TensorData::Float32(pixels) = &batch.inputs else { return Err("inputs not float32".into()) };
            images += batch.len();
            checksum += f64::from(pixels.as_slice().map_or(0.0, |p| p[0]));
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{{\"event\": \"epoch\", \"epoch\": {}, \"seconds\": {seconds}, \"images\": {images}, \
             \"images_per_sec\": {}, \"checksum\": {checksum}}}",
            epoch + 1,
            images as f64 / seconds
        );
    }
    Ok(())
}
