//! Times one signature call through `tfload::infer::predict::Predictor`, for `scripts/bench/bench.py`
//! (`bench_inference`): loads the model once, feeds a fixed float32 batch of the signature's
//! one input, and prints the median seconds per call as JSON.
//!
//! Run: cargo run --release --example bench_predict -- DIR BATCH CALLS

use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use tfload::infer::predict::Predictor;
use tfload::{SessionConfig, TensorData, Tensors};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, batch, calls] = args.as_slice() else {
        return Err("usage: bench_predict DIR BATCH CALLS".into());
    };
    let (batch, calls): (usize, usize) = (batch.parse()?, calls.parse()?);
    let predictor = Predictor::load(dir, &["serve"], "serving_default", SessionConfig::default())?;
    let spec = &predictor.signature().inputs[0];
    let mut shape = vec![batch];
    shape.extend(spec.shape.dims().ok_or("input of unknown rank")?[1..].iter().map(|d| d.unwrap_or(1) as usize));
    let values = (0..shape.iter().product::<usize>()).map(|i| (i % 256) as f32).collect();
    let inputs =
        Tensors::from([(spec.key.clone(), TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&shape), values)?))]);
    for _ in 0..3 {
        predictor.run(&inputs)?; // warm-up: first calls build kernels and caches
    }
    let mut times: Vec<f64> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            predictor.run(&inputs).map(|_| start.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    println!("{{\"median_seconds\": {}}}", times[times.len() / 2]);
    Ok(())
}
