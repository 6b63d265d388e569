//! Classify image files with a SavedModel, as `tfload predict` does, through the library.
//!
//! ```sh
//! cargo run --example classify_images -- saved_models/cnn_digits saved_models/data/digits_5_9_images/5/0005.png
//! ```
//!
//! With no arguments it classifies the first image of each class folder of the bundled digits
//! and prints how many got their folder's class (the committed CNN's head is untrained: train
//! it first with `cargo run --example fine_tune`, and pass the trained model's folder).

use std::path::PathBuf;

use tfload::formats::images::list_images;
use tfload::infer::predict::{ClassifierOptions, ImageClassifier, Predictor};
use tfload::SessionConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "saved_models/cnn_digits".to_string());
    let given: Vec<PathBuf> = args.map(PathBuf::from).collect();
    // Without files: one image per class folder, its folder name the expected class.
    let check = given.is_empty();
    let images: Vec<PathBuf> = if check {
        let root = PathBuf::from("saved_models/data/digits_5_9_images");
        let mut firsts = Vec::new();
        for class in ["5", "6", "7", "8", "9"] {
            firsts.push(list_images(&root.join(class))?.into_iter().next().ok_or("empty class folder")?);
        }
        firsts
    } else {
        given
    };

    // Load once; a Predictor is Send + Sync and can serve many threads.
    let predictor = Predictor::load(&model, &["serve"], "serving_default", SessionConfig::default())?;
    let classifier = ImageClassifier::new(predictor, ClassifierOptions::default())?;
    let mut right = 0;
    for (path, top) in images.iter().zip(classifier.classify_files(&images, 3)?) {
        let best = &top[0];
        println!("{}: {} ({:.3})", path.display(), best.class, best.score);
        let expected = path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
        right += usize::from(expected.as_deref() == Some(best.class.as_str()));
    }
    if check {
        println!("{right} of {} images classified as their folder's class", images.len());
    }
    Ok(())
}
