//! One `ImageClassifier` (one session) shared by several threads gives what one thread gives.

use std::path::PathBuf;

use tfload::formats::images::list_images;
use tfload::infer::predict::{ClassifierOptions, ImageClassifier, Predictor};
use tfload::SessionConfig;

#[test]
fn threads_sharing_one_predictor_get_the_single_thread_results() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let predictor =
        Predictor::load(root.join("saved_models/cnn_digits"), &["serve"], "serving_default", SessionConfig::default())
            .unwrap();
    let classifier = ImageClassifier::new(predictor, ClassifierOptions::default()).unwrap();
    let images = list_images(&root.join("saved_models/data/digits_5_9_images")).unwrap();
    let chunks: Vec<&[PathBuf]> = images.chunks(7).collect();
    let alone: Vec<_> = chunks.iter().map(|chunk| classifier.classify_files(chunk, 3).unwrap()).collect();
    let shared: Vec<Vec<_>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|worker| {
                let (classifier, chunks) = (&classifier, &chunks);
                scope.spawn(move || {
                    // Each thread walks the chunks from its own starting point, several times.
                    let mut results = vec![None; chunks.len()];
                    for step in 0..chunks.len() * 2 {
                        let i = (worker * 5 + step) % chunks.len();
                        results[i] = Some(classifier.classify_files(chunks[i], 3).unwrap());
                    }
                    results.into_iter().map(Option::unwrap).collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for results in shared {
        assert_eq!(results, alone);
    }
    assert_eq!(alone.iter().map(Vec::len).sum::<usize>(), images.len());
    assert_eq!(classifier.class_names().unwrap(), ["5", "6", "7", "8", "9"]);
}
